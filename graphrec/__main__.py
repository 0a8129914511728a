from graphrec.cli.main import main

main()
