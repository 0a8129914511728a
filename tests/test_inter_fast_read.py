"""The vectorised .inter reader (large files) agrees with the line-by-line one, and bad rows still get
the line reader's one-line error with the line number; the chunked writer round-trips."""

from __future__ import annotations

import numpy as np
import pytest

import graphrec.data.interactions as inter_mod
from graphrec.data.interactions import read_inter, write_inter
from graphrec.errors import GraphrecError

GOOD = [
    "userID\titemID\tx_label\n0\t1\t0\n1\t0\t2\n\n2\t3\t1\n",
    "itemID\tuserID\trating\tx_label\ttimestamp\n5\t0\t4\t0\t99\n1\t2\t3\t1\t98\n",  # other column order, extra columns
    "userID\titemID\tx_label\r\n0\t1\t0\r\n3\t2\t0\r\n",
]
BAD = [
    ("userID\titemID\tx_label\n0\t1\t0\n1\tx\t0\n", ":3: 'x' is not an integer"),
    ("userID\titemID\tx_label\n0\t1\t0\n1\t-1\t0\n", ":3: negative id"),
    ("userID\titemID\tx_label\n0\t1\t0\n1\t1\t7\n", ":3: x_label 7"),
    ("userID\titemID\tx_label\textra\n0\t1\t0\t1\n1\t1\t0\n", ":3: expected 4 tab-separated columns"),
    ("userID\titemID\tx_label\n0\t1\t0\n#1\t1\t0\n", ":3: '#1' is not an integer"),
    ("userID\titemID\tx_label\n0\t1\t0\n99999999999999999999\t1\t1\n", "does not fit in 64 bits"),
]


@pytest.mark.parametrize("text", GOOD)
def test_fast_reader_equals_line_reader(tmp_path, monkeypatch, text):
    p = tmp_path / "a.inter"
    p.write_text(text)
    slow = read_inter(p)  # a small file: line by line
    monkeypatch.setattr(inter_mod, "FAST_READ_MIN_BYTES", 0)
    with p.open() as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
        cols = [header.index(c) for c in ("userID", "itemID", "x_label")]
        assert inter_mod._parse_fast(fh, cols, len(header)) is not None  # the vectorised path is taken
    fast = read_inter(p)
    for a in ("users", "items", "labels"):
        np.testing.assert_array_equal(getattr(fast, a), getattr(slow, a))
        assert getattr(fast, a).dtype == getattr(slow, a).dtype
    assert (fast.n_users, fast.n_items) == (slow.n_users, slow.n_items)


@pytest.mark.parametrize("text,fragment", BAD)
def test_fast_reader_falls_back_for_errors(tmp_path, monkeypatch, text, fragment):
    p = tmp_path / "b.inter"
    p.write_text(text)
    monkeypatch.setattr(inter_mod, "FAST_READ_MIN_BYTES", 0)
    with pytest.raises(GraphrecError, match=fragment):
        read_inter(p)


def test_chunked_write_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 50, 1001), rng.integers(0, 70, 1001)
    users[0], items[0] = 49, 69
    labels = rng.integers(0, 3, 1001).astype(np.int8)
    write_inter(tmp_path / "c.inter", users, items, labels, chunk=100)
    text = (tmp_path / "c.inter").read_text()
    assert text.count("\n") == 1002 and text.startswith("userID\titemID\tx_label\n0" if users[0] == 0 else "userID\titemID\tx_label\n49\t69\t")
    back = read_inter(tmp_path / "c.inter")
    np.testing.assert_array_equal(back.users, users)
    np.testing.assert_array_equal(back.items, items)
    np.testing.assert_array_equal(back.labels, labels)
