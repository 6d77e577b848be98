#!/usr/bin/env bash
# Security scan of the helm chart: renders charts/modelpub with `helm
# template` and runs checkov's kubernetes checks on every render. Fails on
# any failed check that scripts/security-scan/checkov-skips.txt does not
# justify, on a malformed skip file, and on files checkov cannot parse.
# docs/security.md explains every justified finding.
#
# Usage: bash scripts/security-scan.sh      (after scripts/setup.sh: helm)
# Env:   SECURITY_SCAN_OUT  where renders and reports go
#                           (default target/security-scan, gitignored)
# Idempotent: checkov is installed into .venv-checkov (gitignored) once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

checkov_version="3.3.30"
release="modelpub"
namespace="modelpub"
chart="charts/modelpub"
skips="scripts/security-scan/checkov-skips.txt"
all_optional="scripts/security-scan/all-optional.values.yaml"
checks="scripts/security-scan/checks"   # custom checks (CKV_MODELPUB_*)
out="${SECURITY_SCAN_OUT:-$root/target/security-scan}"
venv="$root/.venv-checkov"

say() { echo "security-scan: $*"; }
die() { echo "security-scan: error: $*" >&2; exit 1; }

# helm: $HELM_BIN, else .tools/bin (scripts/setup.sh) first on PATH, as
# scripts/env.sh and the tests have it. env.sh itself is not sourced: the
# scan needs nothing of .venv's PyTorch.
export PATH="$root/.tools/bin:$PATH"
helm="${HELM_BIN:-$(command -v helm || true)}"
[ -n "$helm" ] && [ -x "$helm" ] || die "helm not found: run scripts/setup.sh (it installs helm v4 into .tools/bin), or set HELM_BIN"

# checkov, pinned, into its own virtualenv (its dependencies must not mix
# with .venv's PyTorch).
installed="$("$venv/bin/checkov" --version 2>/dev/null || true)"
if [ "$installed" = "$checkov_version" ]; then
  say "checkov $checkov_version already in .venv-checkov"
else
  say "installing checkov $checkov_version into .venv-checkov (one time, under a minute)"
  command -v python3 >/dev/null 2>&1 || die "python3 (with venv) is required to install checkov"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$checkov_version"
  installed="$("$venv/bin/checkov" --version 2>/dev/null || true)"
  [ "$installed" = "$checkov_version" ] || die "installed checkov reports version '$installed', not $checkov_version"
fi
py="$venv/bin/python"

# No network beyond the install: no update check, no Prisma Cloud mapping
# or guideline download, no upload.
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE
# checkov imports the custom checks: leave no __pycache__ in the tree.
export PYTHONDONTWRITEBYTECODE=1

rm -rf "$out"
mkdir -p "$out"

# The renders. `default` is what `helm install` with no values creates;
# `all-optional` switches on every optional object (the values file, plus
# any `<key>.enabled: false` in values.yaml the file does not set), with
# images pinned by digest.
mapfile -t auto_enable < <("$py" - "$chart/values.yaml" "$all_optional" <<'PY'
import sys, yaml
defaults = yaml.safe_load(open(sys.argv[1])) or {}
given = yaml.safe_load(open(sys.argv[2])) or {}
def walk(node, path):
    if isinstance(node, dict):
        if node.get("enabled") is False:
            yield ".".join(path + ["enabled"])
        for k, v in node.items():
            yield from walk(v, path + [str(k)])
def lookup(node, dotted):
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
for key in walk(defaults, []):
    if lookup(given, key) is None:
        print(key)
PY
)
all_optional_args=(-f "$all_optional" --include-crds)
for key in "${auto_enable[@]}"; do
  [ -n "$key" ] || continue
  say "all-optional: also setting $key=true (not in $all_optional)"
  all_optional_args+=(--set "$key=true")
done

# The RBAC install modes (docs/security.md, "Install modes and RBAC"):
# every namespace, and a Role in each of two watched namespaces (`default`
# is the third: the release namespace only).
renders=(default all-optional cluster-wide namespaced)
# The extra `helm template` arguments of render $1, into the array `args`.
args_for() {
  case "$1" in
    default) args=() ;;
    all-optional) args=("${all_optional_args[@]}") ;;
    cluster-wide) args=(--set rbac.clusterWide=true) ;;
    namespaced) args=(--set-json 'watchNamespaces=["team-a","team-b"]') ;;
  esac
}

for r in "${renders[@]}"; do
  args_for "$r"
  say "rendering '$r': helm template $release $chart -n $namespace ${args[*]}"
  "$helm" template "$release" "$chart" -n "$namespace" "${args[@]}" \
    --output-dir "$out/$r/manifests" >/dev/null \
    || die "helm template failed for render '$r'"
done

for r in "${renders[@]}"; do
  say "checkov $checkov_version --framework kubernetes on '$r' ($(find "$out/$r/manifests" -name '*.yaml' | wc -l) files)"
  rc=0
  "$venv/bin/checkov" --framework kubernetes -d "$out/$r/manifests" \
    --external-checks-dir "$checks" --skip-download --compact -o json \
    > "$out/$r/checkov.json" 2> "$out/$r/checkov.stderr" || rc=$?
  # 0: all passed; 1: some failed (judged below); anything else: checkov broke.
  if [ "$rc" -gt 1 ]; then
    cat "$out/$r/checkov.stderr" >&2
    die "checkov exited $rc on render '$r'"
  fi
done

say "judging results against $skips"
"$py" - "$skips" "$out" "${renders[@]}" <<'PY'
import fnmatch, json, re, sys

skips_path, out, renders = sys.argv[1], sys.argv[2], sys.argv[3:]

entries, bad = [], []
for n, line in enumerate(open(skips_path), 1):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    parts = line.split(None, 2)
    if len(parts) < 3 or not re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", parts[0]) or len(parts[2]) < 20:
        bad.append(f"{skips_path}:{n}: want 'CHECK_ID RESOURCE JUSTIFICATION' (a real sentence): {line}")
        continue
    # RESOURCE may be scoped to renders: RENDER_GLOB:RESOURCE_GLOB.
    render_glob, _, resource_glob = parts[1].rpartition(":")
    entries.append({"id": parts[0], "render": render_glob or "*", "resource": resource_glob,
                    "spec": parts[1], "why": parts[2], "line": n, "used": 0})
for b in bad:
    print(f"security-scan: error: {b}", file=sys.stderr)

totals = {"passed": 0, "failed": 0, "justified": 0, "unjustified": 0, "skipped": 0, "parsing_errors": 0}
unjustified = []
for r in renders:
    text = open(f"{out}/{r}/checkov.json").read().strip()
    reports = json.loads(text) if text else []
    if isinstance(reports, dict):
        reports = [reports]
    passed = failed = skipped = parsing = resources = 0
    justified = 0
    for rep in reports:
        if rep.get("check_type", "kubernetes") != "kubernetes":
            continue
        s = rep.get("summary", {})
        passed += s.get("passed", 0); failed += s.get("failed", 0)
        skipped += s.get("skipped", 0); parsing += s.get("parsing_errors", 0)
        resources += s.get("resource_count", 0)
        for f in rep.get("results", {}).get("failed_checks", []):
            match = next((e for e in entries
                          if e["id"] == f["check_id"] and fnmatch.fnmatchcase(r, e["render"])
                          and fnmatch.fnmatchcase(f["resource"], e["resource"])), None)
            if match:
                match["used"] += 1
                justified += 1
            else:
                unjustified.append((r, f))
    if resources == 0:
        print(f"security-scan: error: checkov scanned no resources in render '{r}'", file=sys.stderr)
        bad.append(r)
    print(f"security-scan: {r}: {resources} resources, passed {passed}, failed {failed} "
          f"(justified {justified}, unjustified {failed - justified}), skipped {skipped}, parsing errors {parsing}")
    for k, v in (("passed", passed), ("failed", failed), ("justified", justified),
                 ("unjustified", failed - justified), ("skipped", skipped), ("parsing_errors", parsing)):
        totals[k] += v

# A table of every check on every render, for docs/security.md.
status = {}   # check id -> {"name": ..., render: {"pass": n, "justified": n, "fail": n}}
unjust_keys = {(r, f["check_id"], f["resource"]) for r, f in unjustified}
for r in renders:
    text = open(f"{out}/{r}/checkov.json").read().strip()
    reports = json.loads(text) if text else []
    for rep in reports if isinstance(reports, list) else [reports]:
        res = rep.get("results", {})
        for kind, key in (("passed_checks", "pass"), ("failed_checks", None)):
            for c in res.get(kind, []):
                row = status.setdefault(c["check_id"], {"name": c["check_name"]})
                cell = row.setdefault(r, {"pass": 0, "justified": 0, "fail": 0})
                if key is None:
                    key2 = "fail" if (r, c["check_id"], c["resource"]) in unjust_keys else "justified"
                else:
                    key2 = key
                cell[key2] += 1
def order(cid):
    m = re.match(r"(CKV2?)_([A-Z0-9]+)_(\d+)", cid)
    return (m.group(2) != "K8S", m.group(1), int(m.group(3))) if m else (True, cid, 0)
with open(f"{out}/summary.md", "w") as md:
    md.write("| check | name | " + " | ".join(renders) + " |\n")
    md.write("| --- | --- | " + " | ".join("---" for _ in renders) + " |\n")
    for cid in sorted(status, key=order):
        row = status[cid]
        cells = []
        for r in renders:
            c = row.get(r)
            if not c:
                cells.append("n/a")
                continue
            parts = []
            if c["fail"]: parts.append(f"**FAILED** {c['fail']}")
            if c["justified"]: parts.append(f"justified {c['justified']}")
            if c["pass"]: parts.append(f"passed {c['pass']}")
            cells.append(", ".join(parts))
        md.write(f"| {cid} | {row['name'].replace('|', '/')} | " + " | ".join(cells) + " |\n")
print(f"security-scan: per-check table: {out}/summary.md")

for r, f in unjustified:
    print(f"security-scan: UNJUSTIFIED {f['check_id']} \"{f['check_name']}\" on {f['resource']} "
          f"({f.get('file_path', '?')}, render '{r}'): fix the chart, or justify it in "
          f"{skips_path} and docs/security.md", file=sys.stderr)
for e in entries:
    if not e["used"]:
        print(f"security-scan: warning: stale entry {skips_path}:{e['line']} ({e['id']} {e['spec']}) "
              f"matches no failure: remove it and its row in docs/security.md")

print(f"security-scan: total over {len(renders)} renders: passed {totals['passed']}, failed {totals['failed']} "
      f"(justified {totals['justified']}, unjustified {totals['unjustified']}), "
      f"skipped {totals['skipped']}, parsing errors {totals['parsing_errors']}")
if unjustified or bad or totals["parsing_errors"]:
    print("security-scan: FAILED", file=sys.stderr)
    sys.exit(1)
print("security-scan: OK (every failure is justified in " + skips_path + ")")
PY
say "reports: $out/<render>/checkov.json, $out/summary.md"
