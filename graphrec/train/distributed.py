"""Data-parallel training with ``torch.distributed`` (docs/scaling.md).

Design: explicit gradient all-reduce rather than ``DistributedDataParallel``. graphrec models
compute their losses with ``model.loss(batch)`` (no ``forward``), most of them are full-graph
(every batch propagates over the whole heterograph), DGMRec writes generated features into
its parameters in place and keeps refined graphs as non-tensor state, and a parameter may get
no gradient in a batch (Adam must then skip it, as in one process). One flat all-reduce per
batch over the optimiser's parameters does exactly what is needed:

* every rank draws the same globally shuffled epoch (same seed) and takes a contiguous slice
  of each global batch (:func:`shard_bounds`);
* each rank back-propagates its *contribution* to the global batch loss, so that the sum of
  the contributions over ranks is the single-process loss of the global batch
  (:func:`loss_contribution`). For models whose ``loss`` is a mean over the batch's rows
  plus batch-independent terms (``RecModel.distributed_loss = "rows"``: LightGCN, MF-BPR)
  the contribution is ``loss(shard) * |shard| / |batch|``. For models with terms that are
  not sums over rows (``"replicate"``, the default: DGMRec's in-batch InfoNCE negatives,
  non-squared Frobenius norms, unique-item generation loss; CI2MG's sampled transport
  plans) every rank computes the loss of the whole global batch and contributes ``1/W`` of
  it. Either way the summed gradient is the single-process gradient of the global batch;
* gradients are summed with one all-reduce (:func:`allreduce_gradients`), which also sums the
  loss contributions (non-finite checks and logs agree on every rank) and which parameters
  got a gradient anywhere (the others keep ``grad=None``);
* per-epoch model work (``on_epoch_start``, ``before_evaluation``) runs on rank 0 and is
  broadcast (:func:`broadcast_state`): parameters, buffers, the model's extra state (DGMRec's
  refined graphs) and the torch RNG state.

Launching: under ``torchrun`` the env vars ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT`` describe the group (:func:`launched_env`,
:func:`init_distributed`); :func:`spawn_local` starts N processes on this machine with the
same env vars (``MASTER_ADDR=127.0.0.1``, a free port), for ``graphrec fit --distributed``.
Backend: ``nccl`` when the run uses CUDA (device ``cuda:LOCAL_RANK``), else ``gloo``.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from graphrec.errors import GraphrecError
from graphrec.train.seed import resolve_threads

#: seconds a collective may wait for the other ranks (rank 0's per-epoch work included)
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the process group (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def launched_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's env vars, or ``None`` when they are absent."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise GraphrecError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise GraphrecError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world, local


def _uses_cuda(device: str) -> bool:
    if not torch.cuda.is_available() or str(device).startswith("cpu"):
        return False
    if device == "auto":
        from graphrec.train.seed import resolve_device

        return resolve_device("auto").type == "cuda"
    return True


def init_distributed(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group described by the env vars; :data:`SINGLE` when there is none (or one rank)."""
    env = launched_env()
    if env is None or env[1] == 1:
        return SINGLE
    rank, world, local = env
    cuda = _uses_cuda(str(device))
    backend = "nccl" if cuda else "gloo"
    if cuda:
        if local >= torch.cuda.device_count():
            raise GraphrecError(
                f"rank {rank} needs GPU {local} but {torch.cuda.device_count()} are visible; start at most that many "
                "processes per machine, or train on CPU with --set device=cpu"
            )
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ:
            raise GraphrecError("MASTER_PORT is not set; launch with torchrun or 'graphrec fit --distributed'")
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=float(timeout_s)))
    return DistContext(rank, world, local, backend)


#: Set in the ranks :func:`spawn_local` starts; they end with ``os._exit`` after their work.
SPAWNED_RANK_ENV = "GRAPHREC_SPAWNED_RANK"


def shutdown() -> None:
    """Leave the process group. All ranks first meet at a barrier, so none tears the group down
    while another is still inside a collective. Ranks started by :func:`spawn_local` stop there:
    they end with ``os._exit`` right after, and gloo's ``destroy_process_group`` can block forever
    (holding the GIL) in a rank whose peer has already exited, which happened in 3 of about 45
    local 2-rank runs. Other processes (torchrun, the Python API) destroy the group."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            if os.environ.get(SPAWNED_RANK_ENV) != "1":
                dist.destroy_process_group()


# ----------------------------------------------------------------------------- batches and gradients
def shard_bounds(batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank's contiguous slice of a batch (sizes differ by at most one, like ``np.array_split``)."""
    base, extra = divmod(int(batch_size), int(world_size))
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def loss_contribution(model: nn.Module, batch, ctx: DistContext) -> dict[str, torch.Tensor]:
    """This rank's share of the global batch's losses: summed over ranks, it is ``model.loss(batch)``.

    ``model.distributed_loss == "rows"``: ``loss(shard) * |shard| / |batch|`` (exact for losses that
    are row means plus batch-independent terms); otherwise every rank computes ``loss(batch) / W``.
    """
    mode = getattr(model, "distributed_loss", "replicate")
    b = int(batch.users.shape[0])
    if mode == "rows":
        lo, hi = shard_bounds(b, ctx.rank, ctx.world_size)
        if hi == lo:  # more ranks than rows: nothing to contribute
            return {"loss": torch.zeros((), device=batch.users.device)}
        shard = type(batch)(batch.users[lo:hi], batch.pos[lo:hi], batch.neg[lo:hi])
        w = (hi - lo) / b
        return {k: v * w for k, v in model.loss(shard).items()}
    if mode != "replicate":
        raise GraphrecError(f"{type(model).__name__}.distributed_loss must be 'rows' or 'replicate', got {mode!r}")
    return {k: v / ctx.world_size for k, v in model.loss(batch).items()}


def allreduce_gradients(params: Iterable[torch.Tensor], loss_part: torch.Tensor, sparse: Iterable[torch.Tensor] = ()) -> float:
    """Sum every rank's gradients in place with one flat all-reduce; return the summed loss.

    A parameter that got no gradient on any rank keeps ``grad=None`` (Adam skips it, as it
    would in one process); one that got a gradient somewhere gets the sum, zeros counting for
    the ranks that had none.

    ``sparse``: the parameters of ``params`` whose gradients are sparse tensors of the rows a rank
    touched (``sparse_embeddings``: :class:`torch.optim.SparseAdam`, or the tables of
    :class:`graphrec.train.optim.MixedAdam`; :func:`graphrec.train.optim.sparse_parameters`). Their
    ``(rows, values)`` are all-gathered (padded to the longest) and summed by ``coalesce`` in rank
    order, so the result is the same on every rank and costs ``O(rows of the global batch x d)``, not
    ``O(table x d)``; the others (and the loss) go through the flat all-reduce.
    """
    params = list(params)
    sparse_ids = {id(p) for p in sparse}
    for p in params:
        if id(p) in sparse_ids:
            p.grad = _sparse_sum(p)
    params = [p for p in params if id(p) not in sparse_ids]
    device = loss_part.device
    flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
    flat = torch.cat(parts + [flags, loss_part.detach().reshape(1).float().to(device)])
    dist.all_reduce(flat)
    total = len(flat) - len(params) - 1
    had_grad = flat[total:].tolist()  # one device sync: the flags and the summed loss
    offset = 0
    for i, p in enumerate(params):
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone() if had_grad[i] > 0 else None
        offset += n
    return float(had_grad[-1])


def _sparse_sum(p: torch.Tensor) -> torch.Tensor | None:
    """The sum over ranks of ``p``'s sparse row gradient (``None`` where no rank has a row)."""
    world = dist.get_world_size()
    if p.grad is not None:
        g = p.grad.coalesce()
        rows, values = g.indices()[0], g.values()
    else:
        rows = torch.zeros(0, dtype=torch.int64, device=p.device)
        values = torch.zeros((0, *p.shape[1:]), dtype=p.dtype, device=p.device)
    counts = [torch.zeros(1, dtype=torch.int64, device=p.device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([len(rows)], dtype=torch.int64, device=p.device))
    sizes = [int(c) for c in counts]
    longest = max(sizes)
    if longest == 0:
        return None
    pad = longest - len(rows)
    rows = torch.cat([rows, rows.new_zeros(pad)])
    values = torch.cat([values, values.new_zeros((pad, *values.shape[1:]))])
    all_rows = [torch.empty_like(rows) for _ in range(world)]
    all_values = [torch.empty_like(values) for _ in range(world)]
    dist.all_gather(all_rows, rows)
    dist.all_gather(all_values, values)
    r = torch.cat([x[:k] for x, k in zip(all_rows, sizes)])
    v = torch.cat([x[:k] for x, k in zip(all_values, sizes)])
    return torch.sparse_coo_tensor(r.unsqueeze(0), v, p.shape).coalesce()


def all_gather(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (identical list on every rank)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------- rank-0 work
def _has_extra_state(model: nn.Module) -> bool:
    return type(model).get_extra_state is not nn.Module.get_extra_state


def broadcast_state(model: nn.Module, ctx: DistContext, error: str | None = None) -> None:
    """Copy rank 0's parameters, buffers, extra state (``get_extra_state``) and torch RNG state to every rank.

    ``error`` (rank 0 only): a failure of rank 0's work; every rank then raises it.
    """
    if not ctx.enabled:
        return
    payload: list[Any] = [None]
    if ctx.is_main:
        payload = [{
            "error": error,
            "extra": model.get_extra_state() if error is None and _has_extra_state(model) else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if ctx.backend == "nccl" else None,
        }]
    dist.broadcast_object_list(payload, src=0)
    state = payload[0]
    if state["error"] is not None:
        if ctx.is_main:
            return  # rank 0 re-raises its own exception
        raise GraphrecError(f"rank 0 failed: {state['error']}")
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)
    if not ctx.is_main:
        if state["extra"] is not None:
            model.set_extra_state(state["extra"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])


def run_on_main(model: nn.Module, ctx: DistContext, fn: Callable[[], None]) -> None:
    """Run ``fn`` (which changes ``model``) on rank 0 only, then :func:`broadcast_state`."""
    if not ctx.enabled:
        fn()
        return
    if not ctx.is_main:
        broadcast_state(model, ctx)
        return
    try:
        fn()
    except BaseException as exc:
        broadcast_state(model, ctx, error=f"{type(exc).__name__}: {exc}" if not isinstance(exc, GraphrecError) else str(exc))
        raise
    broadcast_state(model, ctx)


def share_from_main(ctx: DistContext, fn: Callable[[], Any]) -> Any:
    """``fn()`` evaluated on rank 0 and sent to every rank; a :class:`GraphrecError` there is raised everywhere."""
    if not ctx.enabled:
        return fn()
    box: list[Any] = [None]
    if ctx.is_main:
        try:
            box = [("ok", fn())]
        except GraphrecError as exc:
            box = [("error", str(exc))]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise GraphrecError(value)
    return value


# ----------------------------------------------------------------------------- local launcher
def free_port() -> int:
    """A free TCP port on the loopback interface (there is a small race until rank 0 binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(local_rank: int, fn: Callable, nproc: int, port: int, errdir: str, args: tuple) -> None:
    os.environ.update({
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(local_rank), "LOCAL_RANK": str(local_rank),
        "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), SPAWNED_RANK_ENV: "1",
    })
    # every rank is on this machine: gloo talks over loopback instead of resolving the host name
    if "GLOO_SOCKET_IFNAME" not in os.environ and Path("/sys/class/net/lo").exists():
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores (of this process's affinity mask) instead of oversubscribing them
        torch.set_num_threads(max(1, resolve_threads(0) // nproc))
    # the launcher asks a stuck rank where it is (SIGUSR1) before stopping it
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):
        stack_file = open(Path(errdir, f"rank{local_rank}.stack"), "w")  # noqa: SIM115 - lives as long as the rank
        faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
    code = 0
    try:
        fn(*args)
    except GraphrecError as exc:
        Path(errdir, f"rank{local_rank}.err").write_text(str(exc))
        code = 2
    except SystemExit as exc:  # 'graphrec fit' interrupted: its line is printed, its exit code kept
        code = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt as exc:  # SIGINT/SIGTERM (graphrec.train.interrupt) while stopping with the others
        code = int(getattr(exc, "exit_code", 130))
    except BaseException:  # noqa: BLE001 - reported here, then the process ends
        import traceback

        traceback.print_exc()
        code = 1
    # the work is done and written (or reported); skip interpreter teardown in every case, since
    # gloo's threads can block it forever when another rank has already gone
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _stuck_stacks(processes: list, ranks: list[int], errdir: str) -> str:
    """Python stacks of the stuck ``ranks`` (their faulthandler output on SIGUSR1), as text for the
    error message: the innermost frame of the main thread of each, plus the file holding them all."""
    import signal

    if not hasattr(signal, "SIGUSR1"):
        return ""
    for r in ranks:
        try:
            os.kill(processes[r].pid, signal.SIGUSR1)
        except (OSError, AttributeError, TypeError):
            pass
    time.sleep(1.0)
    parts = []
    for r in ranks:
        stack = Path(errdir, f"rank{r}.stack")
        text = stack.read_text() if stack.exists() else ""
        if not text.strip():
            continue
        keep = Path(tempfile.gettempdir(), f"graphrec-stuck-rank{r}-{os.getpid()}.txt")
        keep.write_text(text)
        current = text.split("Current thread", 1)[-1].splitlines()
        frame = next((line.strip() for line in current if line.strip().startswith("File ")), "?")
        parts.append(f"rank {r} was at {frame} (all threads: {keep})")
    return ("; " + "; ".join(parts)) if parts else ""


def spawn_local(fn: Callable, nproc: int, args: tuple = (), timeout_s: float | None = None,
                straggler_s: float = 120.0) -> None:
    """Run ``fn(*args)`` in ``nproc`` fresh processes on this machine as ranks 0..nproc-1.

    The env vars are those torchrun sets (``MASTER_ADDR=127.0.0.1`` and a free loopback port), so
    ``fn`` calls :func:`init_distributed` as under torchrun. ``fn`` must be importable (module
    level). A :class:`GraphrecError` in a rank is re-raised here (rank 0's first); any other failure
    stops every rank and raises. ``timeout_s`` bounds the whole run; ``straggler_s`` bounds how long
    the other ranks may go on once one rank has finished (they all end within a barrier of each
    other, so a rank still running long after is stuck). Either way the ranks are terminated.
    """
    import torch.multiprocessing as mp

    if nproc < 1:
        raise GraphrecError(f"--nproc must be >= 1, got {nproc}")
    with tempfile.TemporaryDirectory(prefix="graphrec-dist-") as errdir:
        ctx = mp.start_processes(_entry, args=(fn, nproc, free_port(), errdir, args), nprocs=nproc, join=False,
                                 start_method="spawn")
        deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
        first_done: float | None = None
        try:
            while not ctx.join(timeout=0.5):
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    raise GraphrecError(f"distributed run did not finish within {timeout_s:g} s; its processes were stopped")
                if first_done is None and any(not p.is_alive() for p in ctx.processes):
                    first_done = now
                if first_done is not None and now - first_done > straggler_s:
                    stuck = [i for i, p in enumerate(ctx.processes) if p.is_alive()]
                    where = _stuck_stacks(ctx.processes, stuck, errdir)
                    raise GraphrecError(
                        f"rank(s) {stuck} still running {straggler_s:g} s after another rank finished; their processes "
                        f"were stopped (a lost collective: see docs/scaling.md){where}"
                    )
        except (mp.ProcessExitedException, mp.ProcessRaisedException) as exc:
            errs = sorted(Path(errdir).glob("rank*.err"), key=lambda p: int(p.stem[4:]))
            if errs:
                raise GraphrecError(errs[0].read_text()) from None
            raise RuntimeError(f"a distributed rank failed:\n{exc}") from None
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
                    if p.is_alive():
                        p.kill()
                        p.join(5)
