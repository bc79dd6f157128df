# Shared by the tools/*.sh checks: prefixed log lines and a fatal error with an exit code.
# The sourcing script sets TOOL_NAME first; every line it prints then starts with [TOOL_NAME].

log() { printf '[%s] %s\n' "$TOOL_NAME" "$*"; }

# die CODE MESSAGE...: the message on stderr, then exit with CODE.
die() {
  local code="$1"
  shift
  log "ERROR: $*" >&2
  exit "$code"
}
