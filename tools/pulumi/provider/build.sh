#!/usr/bin/env bash
# Build pulumi-resource-postgresql (a Pulumi bridged provider over
# cyrilgdn/terraform-provider-postgresql v1.27.0) from Go modules only.
#
#   tools/pulumi/provider/build.sh OUT_DIR     -> OUT_DIR/pulumi-resource-postgresql
#   X402_PROVIDER_TEST=0 build.sh OUT_DIR      -> skip the mapping test
#
# Idempotent: the verified upstream copy is kept under $X402_CACHE and reused;
# re-running only re-links the symlink, regenerates the schema and rebuilds.
set -euo pipefail

OUT=${1:?usage: build.sh OUT_DIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${X402_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/x402db}/pulumi-provider

# Pinned inputs. UP_SUM is the go.sum (h1:) hash of the module zip; a
# directory replace is not checked by go.sum, so we check it here.
UP_MOD=github.com/cyrilgdn/terraform-provider-postgresql
UP_VER=v1.27.0
UP_SUM='h1:8syK3HUpUoZmScfcUHYO7e8PrASpPIYt3bWLpONo0cQ='
# Honest label: the 3.18.2 API (tokens/properties of pulumi-postgresql 3.18.x),
# but our own build, not Pulumi's 3.18.2 binary: "+x402.1" is semver build
# metadata, so the engine's ">=3.18.2" check sees 3.18.2 and prints no warning.
VERSION=${X402_PROVIDER_VERSION:-$(cat "$HERE/VERSION")}
VERSION_VAR=x402db.invalid/pulumi-resource-postgresql/info.Version

# One stderr line as each step starts: pulumi_tools.py prints it with the step's time.
step() { echo "x402-step: $*" >&2; }

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-modcacherw -buildvcs=false"
mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)

# 1. upstream: download via the go command (checks sum.golang.org), verify the
#    zip against the pinned hash, unpack, apply pulumi-postgresql's
#    0001-fix-import-path.patch (module line + main.go import).
UP_DIR=$CACHE/upstream-$UP_VER
if [ ! -f "$UP_DIR/.x402-verified" ]; then
	step "upstream $UP_MOD@$UP_VER: download and verify"
	zip=$(cd "$CACHE" && GOFLAGS=-modcacherw go mod download -json "$UP_MOD@$UP_VER" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["Zip"])')
	tmp=$(mktemp -d "$CACHE/upstream.XXXXXX")
	python3 - "$zip" "$UP_SUM" "$UP_MOD@$UP_VER/" "$tmp" <<'PY'
import base64, hashlib, os, sys, zipfile
zpath, want, prefix, dest = sys.argv[1:]
z = zipfile.ZipFile(zpath)
names = sorted(n for n in z.namelist() if not n.endswith("/"))
# golang.org/x/mod/sumdb/dirhash.Hash1 over the zip's file names
summary = "".join("%s  %s\n" % (hashlib.sha256(z.read(n)).hexdigest(), n) for n in names)
got = "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()
if got != want:
    sys.exit("upstream zip hash mismatch: got %s want %s" % (got, want))
for n in names:
    assert n.startswith(prefix) and ".." not in n.split("/"), n
    p = os.path.join(dest, n[len(prefix):])
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(z.read(n))
print("upstream zip verified:", got)
PY
	sed -i 's#^module github.com/terraform-providers/terraform-provider-postgresql$#module github.com/cyrilgdn/terraform-provider-postgresql#' "$tmp/go.mod"
	sed -i 's#"github.com/terraform-providers/terraform-provider-postgresql/postgresql"#"github.com/cyrilgdn/terraform-provider-postgresql/postgresql"#' "$tmp/main.go"
	grep -qx 'module github.com/cyrilgdn/terraform-provider-postgresql' "$tmp/go.mod"
	grep -q '"github.com/cyrilgdn/terraform-provider-postgresql/postgresql"' "$tmp/main.go"
	touch "$tmp/.x402-verified"
	rm -rf "$UP_DIR"
	mv "$tmp" "$UP_DIR"
fi
ln -sfn "$UP_DIR" "$HERE/upstream"
[ "${X402_PROVIDER_PREPARE_ONLY:-0}" = 1 ] && exit 0

cd "$HERE"
# 2. schema: generate it from our ProviderInfo with the bridge's tfgen (offline;
#    docs come from ./upstream/website), then stamp the version into it.
# Per build: two builds at once must not share tfgen's output.
step "schema: build tfgen and generate"
WORK=$(mktemp -d "$CACHE/work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/schema"
go build -trimpath -o "$WORK/pulumi-tfgen-postgresql" -ldflags "-X $VERSION_VAR=$VERSION" ./cmd/pulumi-tfgen-postgresql
"$WORK/pulumi-tfgen-postgresql" schema --skip-examples --out "$WORK/schema" >"$WORK/tfgen.log" 2>&1 ||
	{ tail -50 "$WORK/tfgen.log"; exit 1; }
python3 - "$WORK/schema/schema.json" "$VERSION" cmd/pulumi-resource-postgresql/schema-embed.json <<'PY'
import json, sys
src, version, dst = sys.argv[1:]
s = json.load(open(src))
s["version"] = version
new = json.dumps(s, indent=2, sort_keys=False) + "\n"
try:
    old = open(dst).read()
except FileNotFoundError:
    old = None
if old != new:  # keep mtime stable for idempotent rebuilds
    open(dst, "w").write(new)
PY

# 3. mapping test: tokens and property names equal the reference schema.
if [ "${X402_PROVIDER_TEST:-1}" = 1 ]; then
	step "mapping test: go test ./info/"
	go test -count=1 ./info/
fi

# 4. the provider binary
step "provider binary"
go build -trimpath -ldflags "-s -w -X $VERSION_VAR=$VERSION" \
	-o "$OUT/pulumi-resource-postgresql" ./cmd/pulumi-resource-postgresql
echo "built $OUT/pulumi-resource-postgresql ($VERSION)"
