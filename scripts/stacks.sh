#!/usr/bin/env bash
# Build the third-party serving stacks under stacks/<name>/ (MLServer, LitServe, llama-cpp-python) into images
# `tui-profiler-stack-<name>:<hash>` (also tagged `:latest`), where <hash> covers the stack's folder, the
# base image and the torch image: an unchanged stack is not rebuilt (seconds to check).
#
#   scripts/stacks.sh [NAME ...]      build the named stacks (default: all), print "NAME TAG" per stack
#   scripts/stacks.sh --tag NAME      print the tag the stack's image has when up to date (no stack build)
#
# torch comes from the model server's dependency layer (tui-profiler-server-deps:<hash>, made by
# `tui-profiler images build` when missing), so it is installed once per machine. The stack's own packages
# (stacks/<name>/requirements.txt, constrained to the versions in that layer) are pip-downloaded on the host
# into $CACHE/stacks/<name>/wheels; a rebuild on the same machine installs from there without network. A
# stack whose packages PyPI has only as source (llama-cpp-python) has an executable stacks/<name>/host-wheels.sh
# that builds those wheels into the same folder first (once per machine).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${TUI_PROFILER_CACHE:-/var/cache/tui-profiler}
log() { printf '[stacks] %s\n' "$*" >&2; }

all_stacks() { for d in stacks/*/Dockerfile; do basename "$(dirname "$d")"; done; }

# "BASE TORCH_IMAGE": the base image the server image uses and the torch layer (built when missing).
images() {
  python3 -c 'import sys; from tui_profiler import images as i; print(*i.ensure_deps_image(lambda s: print(s, file=sys.stderr)))' \
    | tail -n 1
}

stack_hash() {  # NAME BASE TORCH_IMAGE
  local name=$1 ids
  ids=$(docker image inspect --format '{{.Id}}' "$2" "$3")
  { (cd "stacks/$name" && find . -type f -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum); echo "$ids"; } \
    | sha256sum | cut -c1-16
}

download_wheels() {  # NAME TORCH_IMAGE -> the wheel folder
  local name=$1 dir=$CACHE/stacks/$1/wheels constraints=$CACHE/stacks/$1/constraints.txt
  mkdir -p "$dir"
  docker run --rm --network none --entrypoint /opt/venv/bin/pip "$2" freeze >"$constraints"
  # Packages PyPI has only as source are built into wheels here first by the stack's own hook (cached in $dir).
  if [ -x "stacks/$name/host-wheels.sh" ]; then
    "stacks/$name/host-wheels.sh" "$dir" >&2 || { log "$name: host-wheels.sh failed"; exit 1; }
  fi
  # From the cache alone first; from the index only when something is missing.
  if ! python3 -m pip download -q --disable-pip-version-check --no-index --find-links "$dir" --only-binary=:all: \
      -c "$constraints" -d "$dir" -r "stacks/$name/requirements.txt" >/dev/null 2>&1; then
    log "$name: downloading its packages into $dir"
    # (--find-links: the wheels a host-wheels.sh built there count as found)
    # (the filter drops pip's notes about index folders on this machine that hold no such package)
    python3 -m pip download -q --disable-pip-version-check --progress-bar off --only-binary=:all: \
      --find-links "$dir" -c "$constraints" -d "$dir" -r "stacks/$name/requirements.txt" 2>&1 \
      | { grep -v "^WARNING: Location '.*' is ignored" || true; } >&2
    [ "${PIPESTATUS[0]}" -eq 0 ] || { log "$name: pip download failed"; exit 1; }
  fi
  echo "$dir"
}

build() {  # NAME BASE TORCH_IMAGE
  local name=$1 base=$2 torch=$3 hash tag repo=tui-profiler-stack-$1 wheels ctx t0=$SECONDS
  hash=$(stack_hash "$name" "$base" "$torch")
  tag=$repo:$hash
  if docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag is up to date"
  else
    wheels=$(download_wheels "$name" "$torch")
    ctx=$(mktemp -d "$CACHE/stack-context-$name.XXXXXX")
    trap 'rm -rf "$ctx"' RETURN
    cp -r "stacks/$name/." "$ctx/"
    mkdir -p "$ctx/wheels" && cp -l "$wheels"/*.whl "$ctx/wheels/" 2>/dev/null || cp "$wheels"/*.whl "$ctx/wheels/"
    log "building $tag from $base + $torch"
    # The engine's classic builder (the SDK's too): it finds the torch venv layer the server image already
    # has, so the stack adds only its own packages. Its output is shown only when the build fails.
    DOCKER_BUILDKIT=0 docker build --build-arg "BASE_IMAGE=$base" --build-arg "TORCH_IMAGE=$torch" \
      --label "tui-profiler.source-hash=$hash" -t "$tag" "$ctx" >"$ctx.log" 2>&1 \
      || { tail -n 20 "$ctx.log" >&2; log "building $tag failed"; rm -f "$ctx.log"; exit 1; }
    rm -f "$ctx.log"
    log "built $tag in $((SECONDS - t0)) s ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}'))"
  fi
  docker tag "$tag" "$repo:latest"
  # Builds this one replaced (their own layers are the stack's packages; the torch layer stays shared).
  docker images --format '{{.Repository}}:{{.Tag}}' "$repo" | grep -v -e ":$hash\$" -e ':latest$' \
    | xargs -r docker rmi >/dev/null 2>&1 || true
  echo "$name $tag"
}

if [ "${1:-}" = "--tag" ]; then
  [ $# -eq 2 ] || { echo "usage: scripts/stacks.sh --tag NAME" >&2; exit 2; }
  read -r base torch < <(images)
  echo "tui-profiler-stack-$2:$(stack_hash "$2" "$base" "$torch")"
  exit 0
fi
names=("$@")
[ ${#names[@]} -gt 0 ] || mapfile -t names < <(all_stacks)
for n in "${names[@]}"; do
  [ -f "stacks/$n/Dockerfile" ] || { echo "scripts/stacks.sh: no stack '$n' (stacks/$n/Dockerfile); known: $(all_stacks | xargs)" >&2; exit 2; }
done
mkdir -p "$CACHE"
read -r base torch < <(images)
exec 9>"$CACHE/stacks.lock"
flock 9  # one build at a time per machine
rm -rf "$CACHE"/stack-context-*  # left by an interrupted build (hard links: cheap)
for n in "${names[@]}"; do build "$n" "$base" "$torch"; done
