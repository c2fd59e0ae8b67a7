#!/usr/bin/env bash
# Renders a report in headless Chromium and checks that the page a person opens has its tables and its
# plots: the report is made from the committed fixture run folders (the format `wrn train` writes) by
# the wrn-report library, then loaded from disk by Debian's chromium, installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The plots carry their own font (embedded in the binary); Chromium needs one for the page's text.
need=()
command -v chromium >/dev/null || need+=(chromium)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "test-browser: ${need[*]} not installed, and installing needs root: sudo apt-get install -y ${need[*]}" >&2
    exit 2
  fi
  echo "test-browser: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo run -q -p wrn-report --example report -- --runs crates/wrn-report/tests/fixtures/runs \
  --table t4 --table t6 --table t8 --out "$out/report" >/dev/null
page="file://$out/report/report.html"
chrome=(chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run --user-data-dir="$out/profile")
"${chrome[@]}" --dump-dom "$page" >"$out/dom.html" 2>"$out/chromium.log" || { cat "$out/chromium.log"; exit 1; }
"${chrome[@]}" --window-size=1400,2400 --screenshot="$out/page.png" "$page" >>"$out/chromium.log" 2>&1 || { cat "$out/chromium.log"; exit 1; }
# The page in a 1366-pixel-wide frame (a laptop's screen): each results table's width against the page's.
cat >"$out/report/measure.html" <<'EOF'
<!DOCTYPE html><html><body style="margin:0"><iframe id="f" src="report.html" style="width:1366px;height:800px;border:0"></iframe>
<pre id="out">not measured</pre><script>
document.getElementById('f').onload = function () {
  var d = this.contentDocument, wide = [];
  d.querySelectorAll('table.results').forEach(function (t) {
    if (t.scrollWidth > d.body.clientWidth) wide.push(t.getAttribute('data-table') + ':' + t.scrollWidth + '>' + d.body.clientWidth);
  });
  document.getElementById('out').textContent = wide.length ? wide.join(',') : 'all fit';
};
</script></body></html>
EOF
"${chrome[@]}" --allow-file-access-from-files --virtual-time-budget=5000 --dump-dom "file://$out/report/measure.html" \
  >"$out/measure.dom" 2>>"$out/chromium.log" || { cat "$out/chromium.log"; exit 1; }

fail=0
check() { # check DESCRIPTION EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then echo "ok   $1 ($3)"; else echo "FAIL $1: expected $2, got $3"; fail=1; fi
}
count() { grep -o -- "$1" "$out/dom.html" | wc -l | tr -d ' '; }
plots=$(find "$out/report/plots" -name '*.svg' | wc -l | tr -d ' ')
check "results tables in the rendered page" 3 "$(count '<table class="results')"
check "every results table fits a 1366-pixel-wide window" "all fit" "$(sed -n 's/.*<pre id="out">\(.*\)<\/pre>.*/\1/p' "$out/measure.dom")"
check "notes' inline code rendered as code" yes "$(grep -q '<li>[^<]*<code>init = "fan_out"</code>' "$out/dom.html" && echo yes || echo no)"
check "the paper's findings under their tables (t4, t6)" 2 "$(count '<ul class="findings">')"
check "no raw backticks in the notes" 0 "$(grep -o '<li>[^<]*`' "$out/dom.html" | wc -l | tr -d ' ')"
check "summary table" 1 "$(count '<table id="summary"')"
check "inline SVG plots, one per plot file" "$plots" "$(count '<svg')"
check "plots with text drawn" yes "$([ "$(count '<text')" -gt $((plots * 5)) ] && echo yes || echo no)"
check "an agreeing row" 1 "$(grep -c '<tr data-row="wrn-40-4-cifar10"><td>WRN-40-4</td>' "$out/dom.html" || true)"
check "a missing row" yes "$(grep -q '<tr data-row="wrn-40-8-cifar10">.*<td class="missing">missing</td>' "$out/dom.html" && echo yes || echo no)"
check "a reduced-scale row" yes "$(grep -q 'WRN-16-4 (reduced scale)' "$out/dom.html" && echo yes || echo no)"
check "the widening plot" 1 "$(count 'data-plot="params_t4_width"')"
check "the time-per-epoch plot" 1 "$(count 'data-plot="epoch_time"')"
size=$(stat -c %s "$out/page.png")
check "a screenshot with content (> 50 kB)" yes "$([ "$size" -gt 50000 ] && echo yes || echo no)"
if [ "$fail" -ne 0 ]; then
  echo "test-browser: the rendered page is in $out (kept)"; trap - EXIT; exit 1
fi
echo "test-browser: $plots plots and 3 tables rendered by $(chromium --version 2>/dev/null | head -1)"
