#!/usr/bin/env bash
# Release step for an app: build one allinone bundle per device profile and copy each bundle's model.pte and
# manifest.json into the app's assets, checking every file against the sha256 the build reported.
# Walkthrough: docs/howto-release.md.
#
#   scripts/release_example.sh CHECKPOINT ASSETS_DIR PROFILE [PROFILE...]
#
# PROFILE: a shipped profile name (`allinone profiles list`) or a path to a .yaml file.
# Result:  ASSETS_DIR/<profile>/model.pte and ASSETS_DIR/<profile>/manifest.json, replaced whole.
# Environment: ALLINONE (default: allinone), PYTHON (default: python3, reads the build's JSON),
#              ALLOW_PARTIAL=1 to ship the bundles that were built when some profile failed (exit code kept).
# Exit codes: those of `allinone build` (0 built; 2 bad input; 3 no system fits a profile; 4 a program failed
#             verification), or 5 when a copied file does not match its sha256.
set -euo pipefail

ALLINONE=${ALLINONE:-allinone}
PYTHON=${PYTHON:-python3}

if [ $# -lt 3 ]; then
    echo "usage: $0 CHECKPOINT ASSETS_DIR PROFILE [PROFILE...]" >&2
    exit 2
fi
checkpoint=$1
assets=$2
shift 2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
profile_args=()
for profile in "$@"; do
    profile_args+=(--profile "$profile")
done

# 1. Build. --json puts one JSON object on stdout; progress and logs go to stderr. Keep going on a failure
#    to read the exit code (set -e would stop the script right here).
status=0
"$ALLINONE" build --checkpoint "$checkpoint" "${profile_args[@]}" --out "$work/dist" --json \
    >"$work/build.json" 2>"$work/build.log" || status=$?

# 2. Decide from the exit code.
case $status in
    0) ;;
    2)  # bad input (unknown profile, invalid YAML, missing catalog...): nothing was built, stdout is empty
        echo "release: bad input:" >&2
        grep '^allinone: error:' "$work/build.log" >&2 || tail -n 5 "$work/build.log" >&2
        exit 2 ;;
    3|4)  # some profiles failed (3: no system fits; 4: verification failed); the others were built
        "$PYTHON" -c 'import json, sys
for f in json.load(open(sys.argv[1]))["failures"]:
    print("release: %s: exit %d: %s" % (f["profile"], f["exit_code"], f["error"]), file=sys.stderr)' \
            "$work/build.json"
        if [ "${ALLOW_PARTIAL:-0}" != 1 ]; then
            echo "release: nothing copied (set ALLOW_PARTIAL=1 to ship the bundles that were built)" >&2
            exit "$status"
        fi ;;
    *)  # 130: interrupted; anything else: a crash (the log has the traceback)
        echo "release: allinone build exited with $status" >&2
        tail -n 20 "$work/build.log" >&2
        exit "$status" ;;
esac

sha256() {  # sha256 of a file, with GNU coreutils or the macOS tool
    if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# 3. Copy each built bundle; one tab-separated line per bundle: profile, path, subnet, sha256, pte bytes.
#    (With jq: jq -r '.bundles[] | [.profile, .path, .subnet, .sha256, .pte_bytes] | @tsv' build.json)
"$PYTHON" -c 'import json, sys
for b in json.load(open(sys.argv[1]))["bundles"]:
    print("\t".join(str(b[k]) for k in ("profile", "path", "subnet", "sha256", "pte_bytes")))' \
    "$work/build.json" >"$work/bundles.tsv"

mkdir -p "$assets"
while IFS=$'\t' read -r profile path subnet sha pte_bytes; do
    # The manifest records the sha256 the runtime will check on the device: it must be the one reported.
    in_manifest=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["pte"]["sha256"])' \
        "$path/manifest.json")
    staging="$assets/.$profile.new"
    rm -rf "$staging"
    mkdir -p "$staging"
    cp "$path/model.pte" "$path/manifest.json" "$staging/"
    copied=$(sha256 "$staging/model.pte")
    if [ "$copied" != "$sha" ] || [ "$in_manifest" != "$sha" ]; then
        echo "release: $profile: sha256 mismatch (build $sha, manifest $in_manifest, copy $copied)" >&2
        rm -rf "$staging"
        exit 5
    fi
    rm -rf "$assets/$profile"
    mv "$staging" "$assets/$profile"  # the app's folder holds either the old bundle or the new one, whole
    echo "$profile: $subnet, $pte_bytes bytes, sha256 $sha -> $assets/$profile"
done <"$work/bundles.tsv"
exit "$status"
