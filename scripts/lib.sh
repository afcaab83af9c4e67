# Helpers shared by the demos (sourced). Needs BIN (vigilctl's directory)
# and work (holds control.sock).
ctl() { "$BIN/vigilctl" --socket "$work/control.sock" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_for() { # wait_for SECONDS CMD...: until CMD succeeds
    local t=$(( $1 * 10 )); shift
    for _ in $(seq "$t"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "timed out waiting for: $*" >&2; return 1
}
state_is() { ctl status "$1" --json | grep -q "\"state\": \"$2\""; }
faulted() { # faulted VM KIND: a fault of KIND on VM has been located
    ctl events --json | grep '"record":"fault"' | grep "\"vm\":\"$1\"" | grep -q "\"kind\":\"$2\""
}
closed() { # closed VM KIND: a fault of KIND on VM has been closed
    ctl events --json | grep '"record":"closed"' | grep "\"vm\":\"$1\"" | grep -q "\"kind\":\"$2\""
}
