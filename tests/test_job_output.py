"""Quiet job output: one progress line instead of Ray's blocks; --verbose on every job."""

import io
import logging

from momu.cli import build_parser
from momu.job_output import LineBar, ProgressLine, _DropNoise, _RayDataProgressOneLine, progress_bar


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("ray.data._internal.progress.logging_progress", logging.INFO, __file__, 1, msg, (), None)


def test_ray_data_status_block_becomes_one_line():
    block = ["======= Running Dataset: dataset_1 =======", "Total Progress: 3/17",
             "Active & requested resources: 1/2 CPU, 121.3KiB/2.5GiB object store", "",
             "MapBatches(EncodeTextFeatures): 192/1088", "  Tasks: 2; Actors: 1; Queued blocks: 12",
             "=" * 40]
    keep = _RayDataProgressOneLine()
    kept = [r.getMessage() for r in map(_record, block) if keep.filter(r)]
    assert kept == ["Ray Data: 3/17 rows"]
    # nothing done and no total yet: a line that says nothing is dropped
    assert not keep.filter(_record("Total Progress: 0/?"))
    assert keep.filter(_record("Total Progress: 10/?"))


def test_noise_filter_drops_only_known_noise():
    drop = _DropNoise()
    assert not drop.filter(_record("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=..."))
    assert drop.filter(_record("Warning: The Ray cluster currently does not have any available CPUs."))


def test_progress_line_prints_at_most_every_interval():
    out = io.StringIO()
    line = ProgressLine("momu step", total=100, every_s=3600, stream=out)
    assert not line.update(1, loss=1.5)  # too soon after start
    assert line.update(2, force=True, loss=1.25, epoch=0)
    assert not line.update(3)
    text = out.getvalue().strip().splitlines()
    assert len(text) == 1 and text[0].startswith("momu step: 2/100, loss 1.25, epoch 0 (")


def test_progress_bar_in_a_log_is_lines_not_carriage_returns(monkeypatch):
    monkeypatch.delenv("MOMU_VERBOSE", raising=False)
    out = io.StringIO()  # not a terminal
    quick = progress_bar(range(5), desc="quick", stream=out)
    assert isinstance(quick, LineBar) and list(quick) == [0, 1, 2, 3, 4]
    assert out.getvalue() == ""  # a loop shorter than the interval says nothing
    slow = LineBar(range(3), desc="slow", every_s=0.0, stream=out)
    slow.set_postfix(loss="0.5")
    assert list(slow) == [0, 1, 2]
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and lines[-1].startswith("slow: 3/3, loss 0.5 (") and len(lines) == 4
    with LineBar(desc="rows", every_s=0.0, stream=out) as bar:  # tqdm's update / with interface
        bar.update(7)
    assert out.getvalue().splitlines()[-1].startswith("rows: 7 (")
    assert not isinstance(progress_bar(range(2), desc="off", disable=True, stream=out), LineBar)


def test_every_job_takes_verbose():
    parser = build_parser()
    leaves = []

    def walk(p, path):
        subs = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            leaves.append((" ".join(path), p))
        for action in subs:
            for name, child in action.choices.items():
                walk(child, path + [name])

    walk(parser, [])
    assert len(leaves) >= 15
    for name, leaf in leaves:
        assert any("--verbose" in a.option_strings for a in leaf._actions), name
    assert parser.parse_args(["embed", "--verbose"]).verbose is True
