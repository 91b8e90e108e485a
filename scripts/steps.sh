# Shared by the scripts/gpu_*.sh scripts (sourced, not run): `step NAME TIMEOUT_S CMD...` runs CMD
# with a time limit, logs its output to $OUT/NAME.log and its command, exit status and seconds to
# $OUT/steps.txt, prints the log's last lines, and sets status=1 when it fails; it never aborts the
# calling script, so one failing step leaves the others' results.
step() {
    local name=$1 limit=$2; shift 2
    echo "== $name: $*" | tee -a "$OUT/steps.txt"
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
    tail -n "${STEP_TAIL:-4}" "$OUT/$name.log"
    [ $rc -eq 0 ] || status=1
    return $rc
}
