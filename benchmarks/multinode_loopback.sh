#!/usr/bin/env bash
# Multi-node MoMu on a real two-node Ray cluster on 127.0.0.1, through `ray job submit`:
#   1. pretraining with one Ray Train worker per node (scaling.placement_strategy STRICT_SPREAD), checkpoints in a
#      local directory, which is shared storage here because both nodes are on this machine;
#      node_b is killed (SIGKILL to its whole process tree) after the first checkpoint, stays down for a while,
#      then a new node_b joins: the run must finish, restored from its last checkpoint;
#   2. `momu embed` with 2 model actors, which land on both nodes (0.75 CPU each, 1 CPU per node);
#      node_b is killed after the first part is recorded in parts.jsonl; the embedding is re-run (resume) and the
#      output must hold every input id exactly once (embedded or rejected) with read = embedded + rejected.
# Loopback only: every Ray process runs in Ray's single-node mode (node IP 127.0.0.1, ports bound to 127.0.0.1),
# with explicit ports and its own temp dirs; node_b is started by benchmarks/loopback_node.py (see its docstring
# for why not `ray start --address`). Never `ray stop`: only this script's processes are stopped, by pid.
# Every wait is bounded; a trap stops both nodes and removes the temp dir (MN_KEEP=1 keeps it).
# Usage: MOMU_PYTHON=.venv/bin/python benchmarks/multinode_loopback.sh   (prints PASS or FAIL and the numbers)
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${MOMU_PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || { echo "FAIL: no Python at $PY (set MOMU_PYTHON)"; exit 2; }
BIN="$(dirname "$PY")"
RAY="$BIN/ray"
CHECK=("$PY" "$REPO/benchmarks/multinode_check.py")
BASE=${MN_PORT_BASE:-6390}                 # head GCS port; the other ports follow it
WBASE=${MN_WORKER_PORT_BASE:-22100}        # worker port ranges: 100 per node
STEPS=${MN_STEPS:-30}                      # pretraining steps
OUTAGE=${MN_OUTAGE_S:-25}                  # seconds node_b stays down during pretraining
EMBED_ROWS=${MN_EMBED_ROWS:-12000}         # enough parts that node_b is lost mid-run on a fast machine too
EMBED_SOURCE=${MN_EMBED_SOURCE:-$REPO/../shared/data/moleculenet/hiv.csv.gz}
PART_ROWS=${MN_PART_ROWS:-400}
T0=$(date +%s)

WORK=$(mktemp -d /tmp/momu-mn-XXXXXX)      # short: Ray's socket paths have a length limit
SHARED=$WORK/shared                        # the "shared storage" of both nodes
LOG=$WORK/logs
mkdir -p "$SHARED" "$LOG"
DASH=http://127.0.0.1:$((BASE + 1))
HEAD_PID=""
NODEB_PID=""
KILLED=""
NODEB_N=0
STATUS=FAIL
declare -a REPORT=()

note() { REPORT+=("$*"); echo "[$(($(date +%s) - T0))s] $*"; }
fail() { note "FAIL: $*"; exit 1; }

summary() {
    echo
    echo "================ multinode loopback summary ================"
    for line in "${REPORT[@]}"; do echo "  $line"; done
    echo "  total time: $(($(date +%s) - T0)) s"
    echo "$STATUS: multinode loopback (2 Ray nodes on 127.0.0.1; pretraining and embedding survive losing node_b)"
}

cleanup() {
    local rc=$?
    [ "$STATUS" = PASS ] || [ -z "$(ls -A "$LOG" 2>/dev/null)" ] || {
        for f in "$LOG"/*.log; do echo "---- tail of $(basename "$f")"; tail -n 25 "$f"; done; }
    [ -z "$NODEB_PID" ] || "${CHECK[@]}" kill-tree "$NODEB_PID" --match loopback_node.py --grace 15 >/dev/null 2>&1
    [ -z "$HEAD_PID" ] || "${CHECK[@]}" kill-tree "$HEAD_PID" --match "ray start" --grace 15 >/dev/null 2>&1
    summary
    if [ "${MN_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

# wait_for SECONDS WHAT COMMAND...: run COMMAND every 2 s until it succeeds; fail after SECONDS.
wait_for() {
    local limit=$1 what=$2 deadline=$(($(date +%s) + $1))
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${limit}s waiting for $what"
        sleep 2
    done
}

job_status() { "${CHECK[@]}" job-status --address "$DASH" "$1" 2>/dev/null || echo UNKNOWN; }
job_done() { case "$(job_status "$1")" in SUCCEEDED|FAILED|STOPPED) return 0;; *) return 1;; esac; }
# wait_job SECONDS ID: wait until the job ends; fail if it is still running after SECONDS.
wait_job() { wait_for "$1" "job $2 to end" job_done "$2"; }
# ended_within SECONDS ID: whether the job ends within SECONDS (no failure either way).
ended_within() {
    local deadline=$(($(date +%s) + $1))
    until job_done "$2"; do [ "$(date +%s)" -lt "$deadline" ] || return 1; sleep 2; done
}

export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0   # single-node mode: node IP 127.0.0.1, ports on loopback only
export RAY_USAGE_STATS_ENABLED=0 RAY_num_workers_soft_limit=4
# On a busy machine a node's dashboard agent can take longer than the raylet's fixed 15 s wait for its port file
# (ray-project/ray#65983: the raylet aborts with "Timed out waiting for file .../dashboard_agent_listen_port_*"
# and `ray start` reports "The current node timed out during startup"). It is not configurable, so node starts
# are retried (MN_START_ATTEMPTS).
ATTEMPTS=${MN_START_ATTEMPTS:-3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$REPO/platform${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's momu, on both nodes
export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
unset RAY_ADDRESS

node_b_ports() {  # node_b instance k gets its own ports: a killed node's ports may linger
    local b=$((BASE + 10 * $1))
    echo "$b $((b + 1)) $((b + 2)) $((b + 3)) $((b + 4)) $((b + 5))"
}
ALL_PORTS="$(seq "$BASE" $((BASE + 8)) | tr '\n' ' ') $(node_b_ports 1) $(node_b_ports 2) $(node_b_ports 3) $(node_b_ports 4) $(node_b_ports 5) $(node_b_ports 6) $(node_b_ports 7) $(node_b_ports 8) $(node_b_ports 9)"
"${CHECK[@]}" ports $ALL_PORTS $(seq "$WBASE" $((WBASE + 999))) || fail "ports taken"

start_node_b() {
    NODEB_N=$((NODEB_N + 1))
    read -r nm om al ag me re <<<"$(node_b_ports $NODEB_N)"
    setsid "$PY" "$REPO/benchmarks/loopback_node.py" --address "127.0.0.1:$BASE" --temp-dir "$WORK/rb$NODEB_N" \
        --num-cpus 1 --resources '{"node_b": 1}' --node-manager-port "$nm" --object-manager-port "$om" \
        --dashboard-agent-listen-port "$al" --dashboard-agent-grpc-port "$ag" --metrics-export-port "$me" \
        --runtime-env-agent-port "$re" --min-worker-port $((WBASE + 100 * NODEB_N)) \
        --max-worker-port $((WBASE + 100 * NODEB_N + 99)) >"$LOG/node_b$NODEB_N.log" 2>&1 &
    NODEB_PID=$!
    local deadline=$(($(date +%s) + 180))
    while kill -0 "$NODEB_PID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
        "${CHECK[@]}" nodes --address "$DASH" --expect 2 >/dev/null 2>&1 && return 0
        sleep 2
    done
    note "node_b start #$NODEB_N failed: $(grep -m1 -E '^Exception|Error' "$LOG/node_b$NODEB_N.log")"
    "${CHECK[@]}" kill-tree "$NODEB_PID" --match loopback_node.py --grace 10 >/dev/null 2>&1
    NODEB_PID=""
    [ "${1:-1}" -ge "$ATTEMPTS" ] && fail "node_b did not join after $ATTEMPTS attempts (see node_b*.log)"
    start_node_b $((${1:-1} + 1))
}

kill_node_b() {  # sets KILLED to what was signalled
    KILLED=$("${CHECK[@]}" kill-tree "$NODEB_PID" --match loopback_node.py)
    NODEB_PID=""
}

# ---- the cluster -------------------------------------------------------------------------------------------
start_head() {
    local attempt
    for attempt in $(seq "$ATTEMPTS"); do
        setsid "$RAY" start --head --block --node-ip-address 127.0.0.1 --port "$BASE" --dashboard-host 127.0.0.1 \
            --dashboard-port $((BASE + 1)) --dashboard-agent-listen-port $((BASE + 2)) \
            --dashboard-agent-grpc-port $((BASE + 3)) --metrics-export-port $((BASE + 4)) \
            --runtime-env-agent-port $((BASE + 5)) --node-manager-port $((BASE + 6)) \
            --object-manager-port $((BASE + 7)) --ray-client-server-port $((BASE + 8)) --min-worker-port "$WBASE" \
            --max-worker-port $((WBASE + 99)) --num-cpus 1 --resources '{"node_a": 1}' \
            --object-store-memory 200000000 --temp-dir "$WORK/ra$attempt" --disable-usage-stats \
            >"$LOG/head$attempt.log" 2>&1 &
        HEAD_PID=$!
        local deadline=$(($(date +%s) + 180))
        while kill -0 "$HEAD_PID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
            # the job API can answer while the head's raylet has died: wait for the node itself
            "${CHECK[@]}" nodes --address "$DASH" --expect 1 >/dev/null 2>&1 && return 0
            sleep 2
        done
        note "head start attempt $attempt failed: $(grep -m1 -E '^Exception|Error' "$LOG/head$attempt.log")"
        "${CHECK[@]}" kill-tree "$HEAD_PID" --match "ray start" --grace 10 >/dev/null 2>&1
        HEAD_PID=""
    done
    fail "the head node did not start (see head*.log)"
}
start_head
start_node_b
note "cluster: head node_a + node_b on 127.0.0.1 (1 CPU each), up in $(($(date +%s) - T0)) s: $("${CHECK[@]}" nodes --address "$DASH")"

# ---- 1. pretraining: one worker per node, node_b lost after the first checkpoint --------------------------
head -n 401 "$REPO/data/sample/chebi20/validation_slice.tsv" >"$WORK/pairs.tsv"
RUN=mn-pretrain
PJOB=mn-pretrain-$$
# RAY_ADDRESS for the job's actors too: Ray Train's PlacementGroupCleaner otherwise auto-detects the cluster and
# fails when other Ray instances run on the same machine ("Found multiple active Ray instances").
RUNTIME_ENV="{\"env_vars\": {\"RAY_ADDRESS\": \"127.0.0.1:$BASE\"}}"
"$RAY" job submit --address "$DASH" --submission-id "$PJOB" --no-wait --runtime-env-json "$RUNTIME_ENV" -- \
    "$PY" "$REPO/jobs/pretrain.py" --config "$REPO/configs/pretrain_tiny.yaml" --data_paths "[$WORK/pairs.tsv]" \
    --storage_path "$SHARED/ray_results" --text_cache_dir "$SHARED/text_cache" --output-dir "$SHARED/model" \
    --run_name "$RUN" --scaling.num_workers 2 --scaling.placement_strategy STRICT_SPREAD --epochs 50 \
    --max_steps "$STEPS" --checkpoint_every 5 --embedding_plot false --register_model_name momu-multinode \
    >"$LOG/submit_pretrain.log" 2>&1 || fail "ray job submit (pretraining) failed"
first_checkpoint() { [ "$(job_status "$PJOB")" != FAILED ] && [ "$("${CHECK[@]}" checkpoints "$SHARED/ray_results/$RUN")" != "[]" ]; }
wait_for "${MN_INGEST_TIMEOUT_S:-900}" "the first pretraining checkpoint" first_checkpoint
[ "$(job_status "$PJOB")" = RUNNING ] || fail "pretraining job is $(job_status "$PJOB") before node_b was killed"
WORKERS=$("${CHECK[@]}" actors --address "$DASH" --cls RayTrainWorker)
note "pretrain: Train workers $WORKERS"
echo "$WORKERS" | grep -q '"nodes": \["node_a", "node_b"\]' || fail "the 2 Train workers are not on node_a and node_b"
before=$("${CHECK[@]}" checkpoints "$SHARED/ray_results/$RUN")
registered=$("${CHECK[@]}" registered-checkpoints "$SHARED/ray_results/$RUN")
kill_node_b
note "pretrain: killed node_b (SIGKILL to its process tree: $KILLED) with checkpoints at steps $before on disk, $registered registered by Ray Train"
sleep "$OUTAGE"
during=$("${CHECK[@]}" checkpoints "$SHARED/ray_results/$RUN")
note "pretrain: after ${OUTAGE}s with node_b down: job $(job_status "$PJOB"), checkpoints at steps $during, alive Train workers $("${CHECK[@]}" actors --address "$DASH" --cls RayTrainWorker)"
[ "$(job_status "$PJOB")" = RUNNING ] || fail "pretraining job did not wait for node_b: $(job_status "$PJOB")"
last_before_kill=$("$PY" -c "import json,sys; print(max(json.loads(sys.argv[1]) or [0]))" "$registered")
start_node_b
note "pretrain: node_b back (new node)"
wait_job 420 "$PJOB"
final=$(job_status "$PJOB")
"$RAY" job logs --address "$DASH" "$PJOB" >"$LOG/pretrain_job.log" 2>&1
[ "$final" = SUCCEEDED ] || fail "pretraining job ended $final"
metrics=$("${CHECK[@]}" pretrain-metrics --uri "$MLFLOW_TRACKING_URI" --experiment momu-pretrain)
note "pretrain: job SUCCEEDED; final metrics $metrics; $(grep -m1 -E '^run .*steps' "$LOG/pretrain_job.log")"
# Ray Train restores from the newest checkpoint it registered (checkpoint_manager_snapshot.json), i.e. one whose
# round the controller collected from every worker. A checkpoint written just before or while node_b died can be
# on disk without being registered, and is then not used. So the run must resume from a checkpoint on disk and from
# at least the newest one registered before the kill.
resumed=$("$PY" - "$metrics" "$STEPS" "$last_before_kill" "$during" <<'EOF' 2>&1
import json, sys
m, steps, last, on_disk = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
assert m["step"] == steps, f"step {m['step']} != {steps}"
r = int(m["restored_from_step"])
assert r >= last > 0 and r in on_disk, f"restored_from_step {r}, newest registered before the kill {last}, " \
    f"on disk {on_disk}"
late = sorted(set(s for s in on_disk if s > r))
print(f"resumed from step {r} (newest registered checkpoint before the kill: {last}"
      + (f"; step(s) {late} on disk were never registered by Ray Train, so not used)" if late else ")"))
EOF
) || fail "pretraining did not resume from its last checkpoint: $(echo "$resumed" | tail -n 1)"
note "pretrain: $resumed"
[ -f "$SHARED/model/model.safetensors" ] || fail "no exported model"

# ---- 2. embedding: model actors on both nodes, node_b lost after the first part, then a resumed re-run ------
if [ -f "$EMBED_SOURCE" ]; then
    rows=$("${CHECK[@]}" embed-input --source "$EMBED_SOURCE" --rows "$EMBED_ROWS" --out "$WORK/molecules.csv")
else  # no shared data: the bundled slices (400 molecules), in smaller parts
    cat <(cat "$REPO/data/sample/moleculenet/tox21_slice.csv") \
        <(tail -n +2 "$REPO/data/sample/moleculenet/tox21_slice.csv") >"$WORK/tox21x2.csv"
    rows=$("${CHECK[@]}" embed-input --source "$WORK/tox21x2.csv" --rows 400 --out "$WORK/molecules.csv")
    PART_ROWS=50
fi
EMBED_ARGS=(--inputs "$WORK/molecules.csv" --id_column mol_id --smiles_column smiles --model "$SHARED/model"
            --output_dir "$SHARED/embed" --part_rows "$PART_ROWS" --shard_rows "$PART_ROWS" --model_actors 2 --cpus_per_actor 0.75
            --featurize_cpus 0.75 --read_cpus 0.25 --progress false)
EJOB1=mn-embed1-$$
"$RAY" job submit --address "$DASH" --submission-id "$EJOB1" --no-wait -- "$PY" "$REPO/jobs/embed.py" \
    "${EMBED_ARGS[@]}" >"$LOG/submit_embed1.log" 2>&1 || fail "ray job submit (embedding) failed"
first_part() { [ "$(job_status "$EJOB1")" != FAILED ] && [ -s "$SHARED/embed/parts.jsonl" ]; }
wait_for 300 "the first embedded part" first_part
parts_at_kill=$(wc -l <"$SHARED/embed/parts.jsonl")
kill_node_b
ACTORS=$("${CHECK[@]}" actors --address "$DASH" --cls MapWorker --job "$EJOB1")
note "embed: $rows molecules in parts of $PART_ROWS; model actors $ACTORS"
note "embed: killed node_b ($KILLED) with $parts_at_kill of $(((rows + PART_ROWS - 1) / PART_ROWS)) parts recorded"
[ "$parts_at_kill" -lt $(((rows + PART_ROWS - 1) / PART_ROWS)) ] || \
    fail "the first embedding run finished before node_b was lost: raise MN_EMBED_ROWS"
echo "$ACTORS" | grep -q '"nodes": \["node_a", "node_b"\]' || fail "the 2 model actors are not on node_a and node_b"
if ended_within 120 "$EJOB1"; then
    e1=$(job_status "$EJOB1")
    note "embed: first run ended $e1 with node_b down ($(wc -l <"$SHARED/embed/parts.jsonl") parts recorded)"
    start_node_b
else
    note "embed: first run still $(job_status "$EJOB1") 120 s after losing node_b; bringing node_b back"
    start_node_b
    if ended_within 180 "$EJOB1"; then
        e1=$(job_status "$EJOB1")
        note "embed: first run ended $e1 after node_b came back"
    else
        "$RAY" job stop --address "$DASH" "$EJOB1" >/dev/null 2>&1
        wait_job 60 "$EJOB1"
        e1="$(job_status "$EJOB1") (hung; stopped)"
        note "embed: first run did not end after node_b came back; stopped it"
    fi
fi
"$RAY" job logs --address "$DASH" "$EJOB1" >"$LOG/embed1_job.log" 2>&1
EJOB2=mn-embed2-$$
"$RAY" job submit --address "$DASH" --submission-id "$EJOB2" --no-wait -- "$PY" "$REPO/jobs/embed.py" \
    "${EMBED_ARGS[@]}" >"$LOG/submit_embed2.log" 2>&1 || fail "ray job submit (embedding re-run) failed"
wait_job 300 "$EJOB2"
e2=$(job_status "$EJOB2")
"$RAY" job logs --address "$DASH" "$EJOB2" >"$LOG/embed2_job.log" 2>&1
[ "$e2" = SUCCEEDED ] || fail "embedding re-run ended $e2"
note "embed: re-run SUCCEEDED: $(grep -m1 -E '^resumed:' "$LOG/embed2_job.log" || echo 'nothing to resume')"
check=$("${CHECK[@]}" embed-check --output "$SHARED/embed" --input "$WORK/molecules.csv" --id-column mol_id)
note "embed: output check $check"
echo "$check" | grep -q '"ok": true' || fail "embedding output is not complete and duplicate-free"

STATUS=PASS
