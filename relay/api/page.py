"""The ops page served at `/`: a static page that reads the API with the operator's token.

The page itself holds no data, so it is public; every figure on it comes from the API
under the token typed in (kept in sessionStorage), and the `ops` role sees masked numbers.
"""

OPS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>relay ops</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
.frozen{color:#a60}.released{color:#888}.degraded{color:#c00;font-weight:bold}
input{margin-right:.5em}
</style></head><body>
<h1>relay ops</h1>
<div>token <input id="token" type="password" size="24">
<button id="save">use</button> <span id="health"></span></div>
<h2>Route dry run</h2>
<div>from <input id="rfrom" size="16"> to X <input id="rto" size="16">
<button id="rgo">route</button> <code id="rout"></code></div>
<h2>Bindings</h2>
<div>X <input id="fx" size="16"> out_id <input id="fo" size="16">
state <select id="fs"><option value="">any</option><option>active</option>
<option>frozen</option><option>released</option></select>
<button id="fgo">search</button></div>
<table id="bindings"><thead><tr><th>id</th><th>mode</th><th>X</th><th>A</th><th>B</th>
<th>state</th><th>expires</th><th>out_id</th></tr></thead><tbody></tbody></table>
<h2>Number pool</h2><div id="pool"></div>
<script>
const $ = id => document.getElementById(id);
// A token may come in the fragment (#token=...), which never reaches the server's logs.
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) {
  sessionStorage.setItem("relay-token", fromHash);
  history.replaceState(null, "", "/");
}
$("token").value = sessionStorage.getItem("relay-token") || "";
function hdrs(){ const t = $("token").value; return t ? {Authorization: "Bearer " + t} : {}; }
async function api(path){
  const r = await fetch(path, {headers: hdrs()});
  const body = await r.json();
  if (!r.ok) throw new Error(body.detail || r.status);
  return body;
}
function cell(tr, text, cls){ const td = document.createElement("td"); td.textContent =
  text == null ? "" : text; if (cls) td.className = cls; tr.appendChild(td); }
async function health(){
  const h = await api("/healthz");
  $("health").textContent = `${h.status} · ${h.bindings} bindings · store ${h.store}`;
  $("health").className = h.status === "ok" ? "" : "degraded";
}
async function bindings(){
  const q = new URLSearchParams();
  if ($("fx").value) q.set("x", $("fx").value);
  if ($("fo").value) q.set("out_id", $("fo").value);
  if ($("fs").value) q.set("state", $("fs").value);
  const body = await api("/v1/bindings?" + q);
  const tb = $("bindings").querySelector("tbody"); tb.replaceChildren();
  for (const b of body.bindings){
    const tr = document.createElement("tr");
    for (const k of ["id","mode","x","a","b"]) cell(tr, b[k]);
    cell(tr, b.state, b.state); cell(tr, b.expires_at); cell(tr, b.out_id);
    tb.appendChild(tr);
  }
}
async function pool(){
  const p = await api("/v1/numbers?limit=1");
  const s = p.stats;
  $("pool").textContent = `${s.total} numbers: ${s.in_use} in use, ${s.free} free, ` +
    `${s.quarantined} quarantined`;
}
async function route(){
  const q = new URLSearchParams({to: $("rto").value});
  if ($("rfrom").value) q.set("from", $("rfrom").value);
  try { $("rout").textContent = JSON.stringify(await api("/v1/route?" + q)); }
  catch (e) { $("rout").textContent = e.message; }
}
async function refresh(){
  try { await health(); await bindings(); await pool(); }
  catch (e) { $("health").textContent = e.message; $("health").className = "degraded"; }
}
$("save").onclick = () => { sessionStorage.setItem("relay-token", $("token").value); refresh(); };
$("fgo").onclick = bindings; $("rgo").onclick = route;
refresh(); setInterval(health, 5000);
</script></body></html>
"""
