"""Helpers of benchmarks/multinode_loopback.sh: free-port check, process-tree kill, the cluster's nodes and actors
(Ray's state API), job status, the pretraining run's final metrics (MLflow), and the embedding output's checks.
Each subcommand prints one JSON line (or a bare value) for the script to read."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path


def cmd_ports(args) -> int:
    busy = []
    for port in args.ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed socket in TIME_WAIT is not in use
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    if busy:
        print(f"ports already in use on 127.0.0.1: {busy} (set MN_PORT_BASE / MN_WORKER_PORT_BASE to other values)")
        return 1
    return 0


def _processes() -> dict[int, tuple[int, int, int, int]]:
    """pid -> (parent pid, process group, start time, session), from /proc."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            out[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), int(fields[19]), int(fields[3]))
    return out


def tree(root: int, match: str) -> set[tuple[int, int]]:
    """(pid, start time) of `root`, its descendants (Ray workers run in their own sessions but stay children of
    their raylet), and its process group and session (started with setsid: what outlives a dead `root`). `root`
    and its descendants count only while root's command line contains `match` (a recycled pid is not ours)."""
    procs = _processes()
    try:
        ours = match in Path(f"/proc/{root}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        ours = False
    found, frontier = ({root}, {root}) if ours and root in procs else (set(), set())
    while frontier:
        frontier = {pid for pid, p in procs.items() if p[0] in frontier} - found
        found |= frontier
    found |= {pid for pid, p in procs.items() if root in (p[1], p[3])}
    return {(pid, procs[pid][2]) for pid in found if pid in procs}


def cmd_kill_tree(args) -> int:
    """Signal a node's whole process tree (only the processes started from that pid); with --grace, SIGTERM
    first and SIGKILL to whatever is left after that many seconds. The tree is listed once, before any signal,
    because the children of a stopped parent are re-parented and no longer found from it."""
    members = tree(args.pid, args.match)

    def alive() -> list[int]:
        procs = _processes()
        return [pid for pid, start in members if pid in procs and procs[pid][2] == start]

    def send(sig, wait: float) -> None:
        for pid in alive():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while alive() and time.time() < deadline:
            time.sleep(0.5)

    if args.grace:
        send(signal.SIGTERM, args.grace)
    send(signal.SIGKILL, 10)
    print(json.dumps({"processes": len(members), "still_alive": alive()}))
    return 0


def cmd_nodes(args) -> int:
    """Alive nodes: node id -> its custom node_* resource name (node_a, node_b)."""
    from ray.util.state import list_nodes

    nodes = {}
    for n in list_nodes(address=args.address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False):
        names = [k for k in (n.resources_total or {}) if k.startswith("node_") and not k.startswith("node:")]
        nodes[n.node_id] = names[0] if names else n.node_ip
    print(json.dumps(nodes))
    return 0 if args.expect is None or len(nodes) == args.expect else 1


def cmd_actors(args) -> int:
    """Alive actors of a class and the node (node_a / node_b) each one runs on; with --job, every actor of that
    class the job created, alive or not (a short job may be done before anyone looks)."""
    from ray.util.state import list_actors, list_nodes

    names = {}
    for n in list_nodes(address=args.address, raise_on_missing_output=False, detail=True):
        custom = [k for k in (n.resources_total or {}) if k.startswith("node_")]
        names[n.node_id] = custom[0] if custom else n.node_id[:8]
    if args.job:
        from ray.job_submission import JobSubmissionClient

        job_id = JobSubmissionClient(args.address).get_job_info(args.job).job_id
        actors = list_actors(address=args.address, filters=[("job_id", "=", job_id)], limit=1000,
                             raise_on_missing_output=False)
    else:
        actors = list_actors(address=args.address, filters=[("state", "=", "ALIVE")], limit=1000,
                             raise_on_missing_output=False)
    nodes = sorted(names.get(a.node_id, a.node_id) for a in actors if args.cls in (a.class_name or ""))
    key = "actors" if args.job else "alive"
    print(json.dumps({"class": args.cls, key: len(nodes), "nodes": nodes, "distinct_nodes": len(set(nodes))}))
    return 0


def cmd_job_status(args) -> int:
    from ray.job_submission import JobSubmissionClient

    print(JobSubmissionClient(args.address).get_job_status(args.job).value)
    return 0


def cmd_pretrain_metrics(args) -> int:
    """The final metrics of the newest run of an MLflow experiment (what the job logged as final_*)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.uri)
    experiment = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1) \
        if experiment else []
    if not runs:
        print(json.dumps({"error": f"no run in experiment {args.experiment}"}))
        return 1
    m = runs[0].data.metrics
    print(json.dumps({"status": runs[0].info.status, "step": m.get("final_step"),
                      "restored_from_step": m.get("final_restored_from_step"), "epoch": m.get("final_epoch"),
                      "train_loss": m.get("final_train_loss")}))
    return 0


def _checkpoint_steps(paths) -> list[int]:
    """The training step of each checkpoint's train_state.pt; ones that cannot be read (being written right now,
    or deleted by the keep-N policy meanwhile) are left out."""
    import torch

    steps = []
    for path in paths:
        try:
            steps.append(int(torch.load(path, map_location="cpu", weights_only=True)["state"]["step"]))
        except Exception:  # noqa: BLE001
            continue
    return sorted(steps)


def cmd_checkpoints(args) -> int:
    """Steps of the checkpoints a Ray Train run has written (from each checkpoint's train_state.pt)."""
    print(json.dumps(_checkpoint_steps(sorted(Path(args.run_dir).glob("checkpoint_*/train_state.pt")))))
    return 0


def cmd_registered_checkpoints(args) -> int:
    """Steps of the checkpoints Ray Train has registered for a run (its checkpoint_manager_snapshot.json): the
    ones it can restore from. A checkpoint directory can exist without being registered: the controller
    registers a round only after it has collected every worker's report."""
    import re

    snapshot = Path(args.run_dir) / "checkpoint_manager_snapshot.json"
    try:
        names = set(re.findall(r"checkpoint_[0-9A-Za-z_.-]+", snapshot.read_text()))
    except OSError:  # no snapshot yet: nothing registered
        names = set()
    print(json.dumps(_checkpoint_steps(Path(args.run_dir) / name / "train_state.pt" for name in names)))
    return 0


def cmd_embed_input(args) -> int:
    """The first `rows` SMILES of a CSV as `mol_id,smiles` (ids 0..rows-1: the completeness check's reference)."""
    import pyarrow as pa
    import pyarrow.csv as pv

    smiles = pv.read_csv(args.source).column(args.smiles_column).to_pylist()[:args.rows]
    table = pa.table({"mol_id": list(range(len(smiles))), "smiles": smiles})
    pv.write_csv(table, args.out)
    print(len(smiles))
    return 0


def cmd_embed_check(args) -> int:
    """The embedding output against its input: manifest accounting (read = embedded + rejected), ids in the
    shards unique, shard ids + rejected ids == input ids (nothing lost, nothing duplicated)."""
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    out = Path(args.output)
    done = json.loads((out / "DONE.json").read_text()) if (out / "DONE.json").is_file() else None
    parts = [json.loads(line) for line in (out / "parts.jsonl").read_text().splitlines() if line.strip()]
    units = [p["unit"] for p in parts]
    expected = [str(x) for x in pv.read_csv(args.input).column(args.id_column).to_pylist()]
    shards = done["shards"] if done else []
    ids = [str(x) for s in shards for x in pq.read_table(out / s, columns=["id"]).column("id").to_pylist()]
    rejected = [str(x) for x in pq.read_table(out / "rejects.parquet", columns=["id"]).column("id").to_pylist()] \
        if (out / "rejects.parquet").is_file() else []
    got = ids + rejected
    result = {
        "complete": bool(done and done.get("complete")),
        "rows_read": done["rows_read"] if done else sum(p["rows"] for p in parts),
        "embedded": done["embedded"] if done else sum(p["embedded"] for p in parts),
        "rejected": done["rejected"] if done else sum(p["rejected"] for p in parts),
        "accounting_ok": bool(done and done.get("accounting_ok")),
        "input_rows": len(expected), "parts": len(parts), "parts_recorded_twice": len(units) - len(set(units)),
        "shard_rows": len(ids), "duplicate_ids": len(got) - len(set(got)),
        "missing_ids": len(set(expected) - set(got)), "unexpected_ids": len(set(got) - set(expected)),
        "null_embeddings": sum(pq.read_table(out / s, columns=["embedding"]).column("embedding").null_count
                               for s in shards),
        "attempts": len(json.loads((out / "manifest.json").read_text()).get("attempts", [])),
    }
    result["ok"] = (result["complete"] and result["accounting_ok"] and result["rows_read"] == len(expected)
                    and result["duplicate_ids"] == 0 and result["missing_ids"] == 0
                    and result["unexpected_ids"] == 0 and result["parts_recorded_twice"] == 0
                    and result["null_embeddings"] == 0 and result["embedded"] == len(ids))
    print(json.dumps(result))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ports")
    s.add_argument("ports", type=int, nargs="+")
    s.set_defaults(fn=cmd_ports)
    s = sub.add_parser("kill-tree")
    s.add_argument("pid", type=int)
    s.add_argument("--match", required=True, help="text the root's command line must contain (ray, loopback_node)")
    s.add_argument("--grace", type=float, default=0.0, help="SIGTERM first, SIGKILL after this many seconds")
    s.set_defaults(fn=cmd_kill_tree)
    for name, fn in (("nodes", cmd_nodes), ("actors", cmd_actors), ("job-status", cmd_job_status)):
        s = sub.add_parser(name)
        s.add_argument("--address", required=True)
        if name == "nodes":
            s.add_argument("--expect", type=int, help="exit 1 unless exactly this many nodes are alive")
        if name == "actors":
            s.add_argument("--cls", required=True)
            s.add_argument("--job", help="submission id: every actor of the class this job created, alive or not")
        if name == "job-status":
            s.add_argument("job")
        s.set_defaults(fn=fn)
    s = sub.add_parser("pretrain-metrics")
    s.add_argument("--uri", required=True)
    s.add_argument("--experiment", required=True)
    s.set_defaults(fn=cmd_pretrain_metrics)
    s = sub.add_parser("checkpoints")
    s.add_argument("run_dir")
    s.set_defaults(fn=cmd_checkpoints)
    s = sub.add_parser("registered-checkpoints")
    s.add_argument("run_dir")
    s.set_defaults(fn=cmd_registered_checkpoints)
    s = sub.add_parser("embed-input")
    s.add_argument("--source", required=True)
    s.add_argument("--smiles-column", default="smiles")
    s.add_argument("--rows", type=int, required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_embed_input)
    s = sub.add_parser("embed-check")
    s.add_argument("--output", required=True)
    s.add_argument("--input", required=True)
    s.add_argument("--id-column", required=True)
    s.set_defaults(fn=cmd_embed_check)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
