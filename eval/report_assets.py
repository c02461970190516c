"""The report page's constant parts: colours, CSS, the filter script, and the Content-Security-Policy that allows
only these (by sha256)."""
from __future__ import annotations

import base64
import hashlib

# matplotlib's default colour cycle: a model has the same colour in the plots and in the gallery
MODEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")
REFERENCE_COLOUR = "#ffd60a"

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header{background:#17324d;color:#fff;padding:14px 24px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:#d8e3ee}header p.warn{color:#17324d;background:#ffd60a;padding:4px 8px;font-weight:bold}nav a{color:#fff;margin-right:16px}
section{padding:10px 24px 18px;border-bottom:1px solid #ddd}h2{margin:10px 0}
.figs img{max-width:100%;border:1px solid #ddd;background:#fff;margin:4px 0}
.tbls{display:flex;flex-wrap:wrap;gap:14px}.tbl{background:#fff;border:1px solid #ddd;padding:6px 10px;max-width:100%;overflow-x:auto}
.tbl h3{margin:4px 0;font-size:15px}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;
text-align:right;white-space:nowrap}tbody th{text-align:left;font-weight:normal}td.best{font-weight:bold}
ul.notes{font-size:12px;color:#555;max-width:900px;white-space:normal}
.filters{position:sticky;top:0;background:#fafafa;padding:8px 0;z-index:2;display:flex;gap:14px;flex-wrap:wrap;align-items:center}
.legend span{margin-right:12px}.sw{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle;border-radius:2px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}.card.hide{display:none}
.pic{position:relative;width:224px;margin:0 auto}.pic img{display:block;width:224px;height:auto}
.pic svg{position:absolute;left:0;top:0;width:100%;height:100%}.pic rect{fill:none}
.noimg{width:224px;padding:20px 0;text-align:center;background:#eee;color:#a00;font-size:12px}
.q,.ref{margin:4px 0}.ref{color:#1a5d1a}.ans{width:100%;font-size:13px}.ans td{text-align:left;white-space:normal;vertical-align:top;overflow-wrap:anywhere}
.ans td.m{white-space:nowrap;width:1%}.ans td.mk{width:1%;font-weight:bold}.ok td.mk{color:#14852b}.bad td.mk{color:#c0262d}
.det{display:block;font-size:11px;color:#777}.id,.more{font-size:11px;color:#777}.issues{color:#a00}
"""

JS = """
(function(){
  var IM = JSON.parse(document.getElementById('images').textContent);
  document.querySelectorAll('img[data-im]').forEach(function(el){ el.src = IM[+el.getAttribute('data-im')]; });
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var fc = document.getElementById('f-cat'), fd = document.getElementById('f-ds'), fo = document.getElementById('f-ok');
  // data-ok: JSON {model: 1 | 0 | null}; data-cats: JSON list (model and category names may hold any character)
  function pass(card){
    if (fc.value && JSON.parse(card.getAttribute('data-cats')).indexOf(fc.value) < 0) return false;
    if (fd.value && card.getAttribute('data-dataset') !== fd.value) return false;
    if (!fo.value) return true;
    var o = JSON.parse(card.getAttribute('data-ok'));
    var vals = Object.keys(o).map(function(k){ return o[k]; }).filter(function(v){ return v !== null; });
    if (fo.value === 'all-right') return vals.length > 0 && vals.every(function(v){ return v === 1; });
    if (fo.value === 'all-wrong') return vals.length > 0 && vals.every(function(v){ return v === 0; });
    if (fo.value === 'disagree') return vals.indexOf(1) >= 0 && vals.indexOf(0) >= 0;
    var i = fo.value.indexOf(':');  // right:<model> / wrong:<model>
    return o[fo.value.slice(i + 1)] === (fo.value.slice(0, i) === 'right' ? 1 : 0);
  }
  function apply(){
    var n = 0;
    cards.forEach(function(c){ var ok = pass(c); c.classList.toggle('hide', !ok); if (ok) n++; });
    document.getElementById('shown').textContent = n + ' of ' + cards.length + ' samples shown';
  }
  [fc, fd, fo].forEach(function(el){ el.addEventListener('change', apply); });
  window.medvlFilter = function(cat, ds, ok){ fc.value = cat; fd.value = ds; fo.value = ok; apply();
    return cards.filter(function(c){ return !c.classList.contains('hide'); }).length; };
  apply();
})();
"""

# colour swatches by class: a style="" attribute would need style-src 'unsafe-inline'
SWATCH = {c: f"c{k}" for k, c in enumerate((*MODEL_COLOURS, REFERENCE_COLOUR))}
CSS += "".join(f".sw.{cls}{{background:{c}}}" for c, cls in SWATCH.items()) + "\n"


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


# The page's own style and script, by hash: nothing else runs or styles it, even markup that got past escaping
# (an injected <script>, an onerror= handler, a style attribute). Both are constants, so the hashes are too.
CSP = (f"default-src 'none'; img-src data:; style-src {_sha256_source(CSS)}; script-src {_sha256_source(JS)}")
