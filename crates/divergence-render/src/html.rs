//! The HTML report: one self-contained file (inline CSS, SVG and a little vanilla JS; no URL,
//! no network) with the header, the first divergence, the error-growth plot, the layers ×
//! op-kind heatmap, the amplification table and every op in a table that sorts on a header
//! click and filters by a regex typed into a box.
//!
//! The JSON report is embedded verbatim (`<script type="application/json" id="report">`, with
//! `<`, `>` and `&` written as `\u003c` ... so no string can close the element; a report of
//! more than [`LIVE_ROWS`] ops packs it, and its table's rows, as gzip in base64; so does one
//! whose first divergence has a profile of more than 32,768 positions), and every
//! number cell of the ops table carries the exact value (`data-v`, shortest round-trip form),
//! so a test can check that the page shows exactly the numbers of the JSON report. Every name
//! and message is escaped: a probe name is user data.

use std::io::{self, Write};
use std::ops::Range;

use rayon::prelude::*;

use divergence_diff::{sci, OpResult, Report};

use crate::plot;
use crate::svg::escape;
use crate::view::{self, OpsColumn};
use divergence_diff::Measure;

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px 32px;color:#1d1d1f;background:#fafafa}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 8px}
section{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:12px 16px;margin:0 0 16px;overflow-x:auto}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:0}dl.kv dt{color:#666}dl.kv dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace}
.alert{background:#fde8e4;border-color:#d55e00;color:#8a2c00;font-weight:bold}
.first{border-left:6px solid #d55e00}.clean{border-left:6px solid #0072b2}
.warn{color:#8a5a00}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #eee;white-space:nowrap}
th{background:#f3f3f3;text-align:left;position:sticky;top:0}
#ops th{cursor:pointer;user-select:none}#ops th:hover{background:#e6e6e6}
#ops th[aria-sort=ascending]::after{content:" \25B2"}#ops th[aria-sort=descending]::after{content:" \25BC"}
td.n{text-align:right;font-family:ui-monospace,Menlo,Consolas,monospace}
tr.diverged td.s,tr.shape_mismatch td.s,tr.nonfinite td.s{color:#d55e00;font-weight:bold}
tr.fd{background:#ffe0cc;outline:2px solid #d55e00;outline-offset:-2px}tr.qk td.name{font-weight:bold;color:#6c3483}
.controls{margin:0 0 8px}.controls input[type=text]{width:28em;padding:3px 6px;font:inherit}
#count,#count-below{color:#666;margin-left:12px}.bad{color:#d55e00}
.controls.below{margin:8px 0 0}
section#ops{overflow:visible}
section svg{max-width:100%;height:auto}
"#;

const JS: &str = r#"
(function(){
var table=document.getElementById('ops-table');if(!table||table.hasAttribute('data-paged'))return;
var tbody=table.tBodies[0],rows=Array.prototype.slice.call(tbody.rows);
var box=document.getElementById('filter'),only=document.getElementById('only-div'),count=document.getElementById('count');
var col=-1,asc=true;
table.tHead.addEventListener('click',function(e){
 var th=e.target.closest('th');if(!th)return;var c=th.cellIndex;
 asc=(c===col)?!asc:!th.hasAttribute('data-desc');col=c;var num=th.getAttribute('data-type')==='num';
 var key=function(r){var td=r.cells[c];if(num){var v=td.getAttribute('data-v');return v===null?null:parseFloat(v);}return td.textContent;};
 var sorted=rows.slice().sort(function(a,b){var x=key(a),y=key(b);
  if(x===null&&y===null)return 0;if(x===null)return 1;if(y===null)return -1;
  var d=num?x-y:x.localeCompare(y);return asc?d:-d;});
 sorted.forEach(function(r){tbody.appendChild(r);});
 Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute('aria-sort');});
 th.setAttribute('aria-sort',asc?'ascending':'descending');
});
function filter(){
 var q=box.value,re=null;try{re=new RegExp(q,'i');}catch(err){re=null;}
 box.style.background=re?'':'#fde8e4';var shown=0;
 rows.forEach(function(r){var name=r.getAttribute('data-name');
  var ok=(!re||window.divergenceNameMatch(re,name))&&(!only.checked||r.getAttribute('data-div')==='1');
  r.hidden=!ok;if(ok)shown++;});
 count.textContent=shown+' of '+rows.length+' ops';
}
box.addEventListener('input',filter);only.addEventListener('change',filter);filter();
// "show in the table": the filters and the sort cleared (the rows back in execution order: a
// visual check found them left sorted), and the row scrolled to.
var to=document.getElementById('to-first');
if(to)to.addEventListener('click',function(){box.value='';only.checked=false;col=-1;asc=true;
 rows.forEach(function(r){tbody.appendChild(r);});
 Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute('aria-sort');});
 filter();
 var r=document.getElementById('op-'+to.getAttribute('data-op'));if(r)r.scrollIntoView({block:'center'});});
})();
"#;

/// The script of a table of more than [`LIVE_ROWS`] ops: its rows' markup waits, [`PAGE_ROWS`]
/// rows (one a line) to a `<script type="application/gzip+base64" class="ops-rows">`
/// (gzip-compressed, in base64: text the browser only scans at load), and the table holds one
/// page at a time, unpacked (`DecompressionStream`) when first shown and parsed into rows then.
/// A filter or a sort unpacks every page the first time and works on the rows' text (their
/// names, `data-div`, the sorted column's `data-v` or text), never on a detached row; the pager
/// moves through what they leave. There are two pagers, above the table and below it, drawn
/// together (one page, one count line); the one below also scrolls back to the table's top.
/// Each change sets `table.ready`, a promise of the table showing it (true when it drew it;
/// `scripts/bench/html_paged_check.py` awaits it); a change asked before an earlier one is
/// shown wins.
const PAGED_JS: &str = r#"
(function(){
var table=document.getElementById('ops-table');if(!table||!table.hasAttribute('data-paged'))return;
var tbody=table.tBodies[0],packs=document.querySelectorAll('script.ops-rows');
var PAGE=+table.getAttribute('data-page'),N=+table.getAttribute('data-ops'),first=table.getAttribute('data-first');
var box=document.getElementById('filter'),only=document.getElementById('only-div');
// The pagers above and below the table: [previous, next, count line] each.
var pagers=[['prev','next','count'],['prev-below','next-below','count-below']].map(function(p){return p.map(function(id){return document.getElementById(id);});});
var pages=[],all=null,names=null,divs=null,sorted=null,view=null,page=0,col=-1,asc=true,seq=0,sortSeq=0;
var ENT={lt:'<',gt:'>',quot:'"','#39':"'",'#10':'\n',amp:'&'};
function unescapeHtml(s){return s.replace(/&(lt|gt|quot|#39|#10|amp);/g,function(_,e){return ENT[e];});}
function lines(k){if(!pages[k])pages[k]=window.divergenceUnpack(packs[k]).then(function(t){var l=t.split('\n');l.pop();return l;});return pages[k];}
// Every row's markup in execution order, with its name and whether it diverged; a filter or a
// sort makes a list of row numbers.
function rows(){if(!all){var ps=[];for(var k=0;k<packs.length;k++)ps.push(lines(k));
 all=Promise.all(ps).then(function(a){var r=[].concat.apply([],a);
  names=r.map(function(l){var m=/ data-name="([^"]*)"/.exec(l);return m?unescapeHtml(m[1]):'';});
  divs=r.map(function(l){return l.indexOf(' data-div="1"')>=0;});return r;});}return all;}
function total(){return view?view.length:N;}
// The latest show() draws (an earlier one's page that arrives later is dropped); the state
// (sort, filter) is always kept, and a filter is read when the rows are there, so that a
// change made while the rows were unpacked is never lost.
function show(){
 var my=++seq,n=total(),np=Math.max(1,Math.ceil(n/PAGE));page=Math.max(0,Math.min(page,np-1));
 var from=page*PAGE,to=Math.min(from+PAGE,n),at=page;
 var list=view?all.then(function(r){return view.slice(from,to).map(function(i){return r[i];});}):(n?lines(page):Promise.resolve([]));
 return table.ready=list.then(function(l){if(my!==seq)return;
  tbody.innerHTML=l.join('');
  // Unfiltered and unsorted, a page is the rows # from to to-1 (the report's index, from 0);
  // else the rows a filter or sort keeps, counted.
  var text=(view?(to-from)+' of '+n+' ops shown'+(n!==N?' ('+N+' in all)':''):(n?'# '+from+'-'+(to-1)+' of ':'0 of ')+N+' ops')+', page '+(at+1)+' of '+np;
  pagers.forEach(function(p){p[0].disabled=at===0;p[1].disabled=to>=n;p[2].textContent=text;});
  return true;});
}
function filtered(){
 var q=box.value,re=null;try{re=new RegExp(q,'i');}catch(err){re=null;}
 box.style.background=re?'':'#fde8e4';
 if(!q&&!only.checked&&!sorted){view=null;return;}
 var order=sorted||names.map(function(_,i){return i;});
 view=order.filter(function(i){return(!re||window.divergenceNameMatch(re,names[i]))&&(!only.checked||divs[i]);});
}
function apply(){
 page=0;
 if(!box.value&&!only.checked&&!sorted){filtered();return show();}
 return table.ready=rows().then(function(){filtered();return show();});
}
table.tHead.addEventListener('click',function(e){
 var th=e.target.closest('th');if(!th)return;var c=th.cellIndex;
 asc=(c===col)?!asc:!th.hasAttribute('data-desc');col=c;var num=th.getAttribute('data-type')==='num',up=asc;
 Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute('aria-sort');});
 th.setAttribute('aria-sort',asc?'ascending':'descending');var my=++sortSeq;
 table.ready=rows().then(function(r){if(my!==sortSeq)return;
  // a cell's exact number (data-v; none: empty, last) or its text
  var keys=r.map(function(l){var td=l.split('<td')[c+1]||'',gt=td.indexOf('>');
   if(num){var m=/ data-v="([^"]*)"/.exec(td.slice(0,gt));return m?parseFloat(m[1]):null;}
   return unescapeHtml(td.slice(gt+1).replace(/<[^>]*>/g,''));});
  sorted=keys.map(function(_,i){return i;}).sort(function(a,b){var x=keys[a],y=keys[b];
   if(x===null&&y===null)return 0;if(x===null)return 1;if(y===null)return -1;
   var d=num?x-y:x.localeCompare(y);return up?d:-d;});
  return apply();});
});
// Either pager moves the page; the one below brings the table's top back into view once the
// page is drawn (unless a later change drew over it).
function move(below){var s=show();if(below)s.then(function(drawn){if(drawn)document.getElementById('ops').scrollIntoView({block:'start'});});}
pagers.forEach(function(p,i){var below=i===1;
 p[0].addEventListener('click',function(){if(page>0){page--;move(below);}});
 p[1].addEventListener('click',function(){page++;move(below);});});
box.addEventListener('input',apply);only.addEventListener('change',apply);
// "show in the table": the filter and the sort cleared, the first divergence's page shown
// and its row scrolled to (a sort or filter went back to page 1).
var to=document.getElementById('to-first');
if(to)to.addEventListener('click',function(){
 box.value='';only.checked=false;sorted=null;view=null;col=-1;asc=true;sortSeq++;
 Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute('aria-sort');});
 if(first!==null)page=Math.floor(+first/PAGE);
 show().then(function(){var r=document.getElementById('op-'+first);if(r)r.scrollIntoView({block:'center'});});
});
// A filter the browser restored (back, reload) applies at once, as the small table's does.
if(box.value||only.checked){apply();}else{if(first!==null)page=Math.floor(+first/PAGE);show();}
})();
"#;

/// Defined on every page: `divergenceReport()`, a promise of the embedded JSON report parsed
/// (plain JSON, or gzip+base64 in a paged report or one of a long position profile),
/// `divergenceUnpack(element)`, a promise of
/// an element's gzip+base64 text as a string, and `divergenceNameMatch(re, name)`, the
/// filter's test: the name, or a decode step's name without its `@s` (as `--grep` does).
const REPORT_JS: &str = r#"
window.divergenceUnpack=function(el){
 var s=atob(el.textContent),u=new Uint8Array(s.length);for(var i=0;i<s.length;i++)u[i]=s.charCodeAt(i);
 return new Response(new Blob([u]).stream().pipeThrough(new DecompressionStream('gzip'))).text();};
window.divergenceNameMatch=function(re,name){var b=name.replace(/@[0-9]+$/,'');return re.test(name)||(b!==name&&re.test(b));};
window.divergenceReport=function(){var el=document.getElementById('report');
 return(el.type==='application/json'?Promise.resolve(el.textContent):window.divergenceUnpack(el)).then(JSON.parse);};
"#;

/// Most ops whose rows the page builds at once; a report with more shows its table a page at
/// a time ([`PAGED_JS`]): 38,489 live rows (a 64-step decode of the 0.6B-shaped model) took
/// ~19 s to open in Chromium, 0.9 s without the table (docs/html-report.md).
pub(crate) const LIVE_ROWS: usize = 2_000;
/// Rows of one page, and of one packed script element, of a paged table.
pub(crate) const PAGE_ROWS: usize = 1_000;

/// Renders the whole HTML report, written as it is made: the ops table a few rows at a time
/// and the embedded JSON straight from serde, so that memory stays near the report's own (a
/// 256-step decode's 272 MB page took 887 MB when it was made whole first; docs/html-report.md).
/// Rows are read through their views, and a row shown whole is built alone: a compact
/// report's rows are never built all at once.
pub(crate) fn render(full: &Report, out: &mut dyn Write) -> io::Result<()> {
    // What the page shows is made safe as the text renderers' is (control, bidirectional and
    // invisible characters escaped: a name can no longer show reversed or hide a character;
    // a bad-input hunt found them raw in cells, SVG titles and the origin line); the embedded
    // JSON is the report as `render_json` writes it, every string as it is.
    let shown = crate::safe::text_safe(full);
    let report: &Report = &shown;
    let mut h = String::with_capacity(64 * 1024);
    let title = format!("divergence: {} vs {}", report.ours, report.reference);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str(&format!("<title>{}</title>\n", escape(&title)));
    h.push_str(&format!("<style>{CSS}</style>\n</head>\n<body>\n"));
    h.push_str("<h1>divergence report</h1>\n");
    if let Some(w) = view::input_ids_warning(report) {
        h.push_str(&format!(
            "<section class=\"alert\">{}</section>\n",
            escape(w)
        ));
    }
    header(report, &mut h);
    first_divergence(report, &mut h);
    if let Some(svg) = plot::positions(report) {
        h.push_str(
            "<h2>Error per token position (first divergence)</h2>\n<section id=\"positions\">\n",
        );
        h.push_str(&svg);
        h.push_str("</section>\n");
    }
    h.push_str("<h2>Error growth along the forward pass</h2>\n<section id=\"growth\">\n");
    flush(&mut h, out)?;
    out.write_all(plot::growth(report, false).as_bytes())?;
    h.push_str("</section>\n");
    if let Some((svg, hidden)) = plot::heatmap(report) {
        h.push_str("<h2>Per layer and op kind</h2>\n<section id=\"heatmap\">\n");
        flush(&mut h, out)?;
        out.write_all(svg.as_bytes())?;
        if let Some(line) = hidden {
            h.push_str(&format!("<p class=\"note\">{}</p>\n", escape(&line)));
        }
        h.push_str("</section>\n");
    }
    per_step(report, &mut h);
    amplification(report, &mut h);
    ops_table(report, &mut h, out)?;
    not_compared(report, &mut h);
    h.push_str(&format!("<p>{}</p>\n", escape(&view::summary_line(report))));
    let paged = report.ops.len() > LIVE_ROWS;
    // A profile of more positions than the plot draws a bar each (up to a million: tens of MB
    // of JSON) is packed too.
    let long_profile = report
        .positions
        .as_ref()
        .is_some_and(|p| p.rel_err.len() > plot::POSITION_BAR_EACH);
    if paged || long_profile {
        h.push_str(&format!("<script type=\"{PACKED}\" id=\"report\">"));
        flush(&mut h, out)?;
        // serde writes a value a few bytes at a time: gzip takes them 64 KiB at a time.
        let mut packed = io::BufWriter::with_capacity(1 << 16, Packer::new(out));
        serde_json::to_writer(&mut packed, full).map_err(io::Error::from)?;
        packed.into_inner().map_err(|e| e.into_error())?.finish()?;
    } else {
        h.push_str("<script type=\"application/json\" id=\"report\">");
        flush(&mut h, out)?;
        write_embedded_json(full, out)?;
    }
    let js = if paged { PAGED_JS } else { JS };
    h.push_str(&format!(
        "</script>\n<script>{REPORT_JS}{js}</script>\n</body>\n</html>\n"
    ));
    flush(&mut h, out)
}

/// The `type` of a script element whose text is gzip-compressed and base64-encoded: a paged
/// report's embedded JSON and its rows' pages (docs/html-report.md, "Large reports").
pub(crate) const PACKED: &str = "application/gzip+base64";

/// A writer of gzip (fast level: the JSON of a 256-step report, 107 MB, packs to 6.6 MB in
/// ~0.25 s) in base64 to `out`, as the bytes come; [`Packer::finish`] ends both.
struct Packer<'w> {
    gz: flate2::write::GzEncoder<Base64<'w>>,
}

impl<'w> Packer<'w> {
    fn new(out: &'w mut dyn Write) -> Self {
        Packer {
            gz: flate2::write::GzEncoder::new(Base64::new(out), flate2::Compression::fast()),
        }
    }

    fn finish(self) -> io::Result<()> {
        self.gz.finish()?.finish()
    }
}

impl Write for Packer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.gz.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.gz.flush()
    }
}

/// Standard base64 (RFC 4648, padded, no line breaks) of what is written, to `out` in pieces of
/// 64 KiB; [`Base64::finish`] writes the last group.
struct Base64<'w> {
    out: &'w mut dyn Write,
    /// Bytes not yet encoded (fewer than 3 between writes).
    pending: Vec<u8>,
    text: Vec<u8>,
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl<'w> Base64<'w> {
    fn new(out: &'w mut dyn Write) -> Self {
        Base64 {
            out,
            pending: Vec::with_capacity(3),
            text: Vec::with_capacity(1 << 16),
        }
    }

    fn group(text: &mut Vec<u8>, g: &[u8]) {
        let b = |i: usize| g.get(i).copied().unwrap_or(0) as u32;
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for k in 0..4 {
            text.push(if k <= g.len() {
                BASE64[(n >> (18 - 6 * k) & 63) as usize]
            } else {
                b'='
            });
        }
    }

    fn finish(mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            Self::group(&mut self.text, &pending);
        }
        self.out.write_all(&self.text)
    }
}

impl Write for Base64<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        if !self.pending.is_empty() {
            let take = (3 - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() < 3 {
                return Ok(buf.len());
            }
            Self::group(&mut self.text, &self.pending);
            self.pending.clear();
        }
        let whole = rest.len() / 3 * 3;
        for g in rest[..whole].chunks_exact(3) {
            Self::group(&mut self.text, g);
            if self.text.len() >= 1 << 16 {
                self.out.write_all(&self.text)?;
                self.text.clear();
            }
        }
        self.pending.extend_from_slice(&rest[whole..]);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.text)?;
        self.text.clear();
        self.out.flush()
    }
}

/// `text` gzip-compressed and base64-encoded (a page of a paged table's rows).
fn packed(text: &str) -> String {
    let mut b64 = Vec::with_capacity(text.len() / 8);
    {
        let mut p = Packer::new(&mut b64);
        // Writes to a Vec cannot fail.
        let _ = p.write_all(text.as_bytes()).and_then(|()| p.finish());
    }
    // Base64 is ASCII.
    String::from_utf8(b64).unwrap_or_default()
}

/// Writes what `h` holds to `out` and empties it.
fn flush(h: &mut String, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(h.as_bytes())?;
    h.clear();
    Ok(())
}

/// The report as compact JSON that cannot end its `<script>` element: `<`, `>` and `&` (only
/// ever inside JSON strings) are written as `\u003c`, `\u003e`, `\u0026`; parsing it gives the
/// same value as `render_json`'s output. Streamed to `out` as serde writes it.
fn write_embedded_json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    /// `out` with the three characters escaped (ASCII bytes, never inside a multi-byte
    /// character).
    struct ScriptSafe<'w>(&'w mut dyn Write);
    impl Write for ScriptSafe<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut from = 0;
            for (i, b) in buf.iter().enumerate() {
                let escaped: &[u8] = match b {
                    b'<' => b"\\u003c",
                    b'>' => b"\\u003e",
                    b'&' => b"\\u0026",
                    _ => continue,
                };
                self.0.write_all(&buf[from..i])?;
                self.0.write_all(escaped)?;
                from = i + 1;
            }
            self.0.write_all(&buf[from..])?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }
    serde_json::to_writer(ScriptSafe(out), report).map_err(io::Error::from)
}

fn kv(h: &mut String, key: &str, value: &str) {
    h.push_str(&format!(
        "<dt>{}</dt><dd>{}</dd>\n",
        escape(key),
        escape(value)
    ));
}

fn header(report: &Report, h: &mut String) {
    h.push_str("<section id=\"header\">\n<dl class=\"kv\">\n");
    for (key, value) in view::side_lines(report) {
        kv(h, &key, &value);
    }
    kv(h, "tolerance", &view::tolerance_text(&report.tolerance));
    if let Some(judged) = view::judged_text(report) {
        kv(h, "judged", &judged);
    }
    kv(h, "differs", &view::first_difference_text(report));
    if let Some(tokens) = view::tokens_text(report) {
        kv(h, "tokens", &tokens);
    }
    kv(h, "order", report.order_source.describe());
    kv(h, "summary", &view::summary_line(report));
    h.push_str("</dl>\n");
    for w in view::other_warnings(report) {
        h.push_str(&format!("<p class=\"warn\">warning: {}</p>\n", escape(w)));
    }
    for n in &report.notes {
        h.push_str(&format!("<p class=\"note\">note: {}</p>\n", escape(n)));
    }
    if let Some(note) = view::preset_note(report) {
        h.push_str(&format!("<p class=\"note\">note: {}</p>\n", escape(note)));
    }
    h.push_str("</section>\n");
}

fn first_divergence(report: &Report, h: &mut String) {
    let op = report.first_divergence_op();
    let (Some(first), Some(op)) = (&report.first_divergence, op.as_deref()) else {
        if let Some(text) = view::nothing_compared(report) {
            h.push_str(&format!(
                "<section class=\"first\"><b>{}</b></section>\n",
                escape(&text)
            ));
            return;
        }
        let not = view::uncompared_text(report)
            .map(|t| format!("; {t}"))
            .unwrap_or_default();
        h.push_str(&format!(
            "<section class=\"clean\"><b>No divergence</b>: every compared op is {}{}.</section>\n",
            escape(&view::clean_text(report)),
            escape(&not)
        ));
        return;
    };
    h.push_str("<section class=\"first\" id=\"first-divergence\">\n");
    h.push_str(&format!(
        "<h2 style=\"margin-top:0\">First divergence: <span class=\"bad\">{}</span> (#{} of {}) <button type=\"button\" id=\"to-first\" data-op=\"{}\" style=\"font-size:13px\">show in the table</button></h2>\n<dl class=\"kv\">\n",
        escape(&first.name),
        first.index,
        report.ops.len(),
        first.index
    ));
    kv(h, "status", first.status.as_str());
    if let Some(text) = view::step_text(report, first.step) {
        kv(h, "step", &text);
    }
    if let Some(text) = view::origin_text(report) {
        kv(h, "origin", &text);
    }
    kv(h, "reason", &first.reason);
    if let Some(text) = &op.mapped {
        kv(h, "mapped", text);
    }
    for text in view::hint_lines(report) {
        kv(h, "hint", &text);
    }
    if let Some(text) = view::positions_text(report) {
        kv(h, "positions", &text);
    }
    if let Some(l) = first.layer {
        kv(h, "layer", &l.to_string());
    }
    kv(h, "shape", &view::shape_cell(op));
    kv(h, "dtype", &view::dtype_cell(op));
    kv(
        h,
        "‖ours‖ / ‖ref‖",
        &format!(
            "{} / {}",
            view::num(op.rule.ours_l2),
            view::num(op.rule.ref_l2)
        ),
    );
    let at = op
        .errors
        .max_abs_err_index
        .as_ref()
        .map(|i| format!(" at {}", view::shape(&i.to_vec())))
        .unwrap_or_default();
    kv(
        h,
        "max |o-r|",
        &format!("{}{at}", view::num(op.errors.max_abs_err)),
    );
    let rel = match op.truth.noise_ratio {
        // judged by the noise ratio: the preset tolerance did not decide
        Some(_) => view::num(op.errors.rel_l2_err),
        None => format!(
            "{} (rel tolerance {})",
            view::num(op.errors.rel_l2_err),
            view::num(plot::rel_tolerance(op.into()))
        ),
    };
    kv(h, "rel L2 err", &rel);
    if let Some(text) = view::truth_line(op) {
        kv(h, "vs truth", &text);
    }
    kv(h, "cosine", &view::cos(op.errors.cosine));
    kv(h, "outside tol", &view::outside_tol_text(op));
    h.push_str("</dl>\n</section>\n");
}

/// One row per decode step (0 = prefill), every step. Past [`view::SHOWN_STEPS`] steps the
/// table shows the steps the terminal table shows (the prefill, around the first diverging
/// one, the diverging ones, the worst), and every step folds away under them (a UX review's
/// 200-step page put 5,246 px of per-step rows before the ops).
fn per_step(report: &Report, h: &mut String) {
    if report.steps.is_empty() {
        return;
    }
    // The top-1 column where the steps' logits were compared: which steps flipped.
    let tokens = view::has_step_tokens(report);
    let head = format!(
        "<table>\n<thead><tr><th>step</th><th>compared</th><th>diverged</th><th>missing</th>{}<th>worst rel err</th><th>in op</th><th>first diverging op</th></tr></thead>\n<tbody>\n",
        if tokens { "<th>top-1</th>" } else { "" }
    );
    let rows = |steps: &mut dyn Iterator<Item = &divergence_diff::StepSummary>, h: &mut String| {
        h.push_str(&head);
        for s in steps {
            let bad = if s.diverged > 0 { " class=\"bad\"" } else { "" };
            let top1 = if tokens {
                let t = view::step_top1(report, s.step);
                let flip = if t == "FLIP" { " class=\"bad\"" } else { "" };
                format!("<td class=\"n\"><span{flip}>{t}</span></td>")
            } else {
                String::new()
            };
            h.push_str(&format!(
                "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\"><span{bad}>{}</span></td><td class=\"n\">{}</td>{top1}<td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>\n",
                s.step,
                s.compared,
                s.diverged,
                s.missing,
                view::num(s.worst_rel_err),
                escape(view::worst_in(s.worst_rel_err, s.worst_op.as_deref()).unwrap_or("-")),
                escape(s.first_divergence.as_deref().unwrap_or("-")),
            ));
        }
        h.push_str("</tbody>\n</table>\n");
    };
    h.push_str("<h2>Per step (0 = prefill)</h2>\n<section id=\"steps\">\n");
    let (shown, note) = view::step_lines(report, &crate::TableOptions::default());
    match note {
        None => rows(&mut report.steps.iter(), h),
        Some(note) => {
            rows(&mut shown.into_iter(), h);
            h.push_str(&format!(
                "<details><summary>every step ({})</summary>\n",
                escape(&note)
            ));
            rows(&mut report.steps.iter(), h);
            h.push_str("</details>\n");
        }
    }
    h.push_str("</section>\n");
}

fn amplification(report: &Report, h: &mut String) {
    let a = &report.amplification;
    if a.rows.is_empty() {
        return;
    }
    h.push_str(&format!(
        "<h2>q_norm / k_norm amplification ({} amplified, {} introduced at the norm; ratio &gt; {})</h2>\n<section id=\"amplification\">\n",
        a.marked,
        a.introduced,
        escape(&sci(a.threshold))
    ));
    // Decode steps repeat every pair once per step: only those with a verdict are listed.
    let rows: Vec<_> = a
        .rows
        .iter()
        .filter(|r| r.norm.step() == 0 || r.verdict.is_some())
        .collect();
    if rows.is_empty() {
        // A decode report compared without its prefill (`--steps 3`), nothing marked.
        h.push_str("<p>None to show: the prefill's pairs and the pairs with a verdict are listed, and there are none here (the JSON has every pair).</p>\n</section>\n");
        return;
    }
    // The decode steps' pairs, listed only with a verdict: counted (a visual check read the
    // section as the prefill's alone).
    let decode = view::DecodePairs::of(report, |_| true);
    if decode.pairs > 0 {
        h.push_str(&format!(
            "<p>{}: {} (the JSON has every pair).</p>\n",
            match decode.prefill {
                true => "The prefill's pairs, and every pair with a verdict",
                false => "The pairs with a verdict",
            },
            decode.text()
        ));
    }
    // The norms' weight gains come from the checkpoint (`--model DIR`): without any, no
    // column of dashes.
    let gain = view::shows_weight_gain(&rows);
    h.push_str(&format!(
        "<table>\n<thead><tr><th>layer</th><th>q/k</th><th>proj rel err</th><th>norm rel err</th><th>ratio</th><th>abs err gain</th>{}<th>verdict</th></tr></thead>\n<tbody>\n",
        if gain { "<th>norm weight gain</th>" } else { "" }
    ));
    for r in rows {
        let weight = match gain {
            true => format!("<td class=\"n\">{}</td>", view::num(r.weight_gain)),
            false => String::new(),
        };
        h.push_str(&format!(
            "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>{weight}<td class=\"bad\">{}</td></tr>\n",
            view::amp_layer(r),
            r.kind,
            view::num(r.proj_rel_err),
            view::num(r.norm_rel_err),
            view::num(r.ratio),
            view::num(r.abs_err_gain),
            r.verdict.map_or("", |v| v.as_str())
        ));
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

/// The JSON key and exact value behind a number column (`None`: not a number column of the
/// JSON row; the value is `None` for null). The index is the row's position, not a JSON field.
pub(crate) fn column_value(col: OpsColumn, op: &OpResult) -> Option<(&'static str, Option<f64>)> {
    Some(match col {
        OpsColumn::OursL2 => ("ours_l2", op.rule.ours_l2),
        OpsColumn::RefL2 => ("ref_l2", op.rule.ref_l2),
        OpsColumn::MaxAbsErr => ("max_abs_err", op.errors.max_abs_err),
        OpsColumn::RelErr => ("rel_l2_err", op.errors.rel_l2_err),
        OpsColumn::Cosine => ("cosine", op.errors.cosine),
        OpsColumn::OutTol => ("frac_outside_tol", op.frac_outside_tol),
        OpsColumn::TruthOurs => ("ours_truth_rel_err", op.truth.ours_truth_rel_err),
        OpsColumn::TruthRef => ("ref_truth_rel_err", op.truth.ref_truth_rel_err),
        OpsColumn::NoiseRatio => ("noise_ratio", op.truth.noise_ratio),
        _ => return None,
    })
}

/// The shortest text that parses back to exactly `x` (`5.218273174308169e-3`).
pub(crate) fn exact(x: f64) -> String {
    format!("{x:e}")
}

fn ops_table(report: &Report, h: &mut String, out: &mut dyn Write) -> io::Result<()> {
    let columns: Vec<OpsColumn> = view::ops_columns(report)
        .into_iter()
        .filter(|c| *c != OpsColumn::Mark)
        .collect();
    let first = report.first_divergence.as_ref().map(|f| f.index);
    let paged = report.ops.len() > LIVE_ROWS;
    let pager = if paged {
        format!(" {}", pager_buttons(""))
    } else {
        String::new()
    };
    let table = if paged {
        format!(
            "<table id=\"ops-table\" data-paged=\"1\" data-page=\"{PAGE_ROWS}\" data-ops=\"{}\"{}>",
            report.ops.len(),
            first.map_or_else(String::new, |i| format!(" data-first=\"{i}\""))
        )
    } else {
        "<table id=\"ops-table\">".to_string()
    };
    h.push_str(&format!(
        "<h2>All ops ({})</h2>\n<section id=\"ops\">\n<div class=\"controls\"><input type=\"text\" id=\"filter\" placeholder=\"filter op names (regex, e.g. layers\\.3\\.|k_norm)\" aria-label=\"filter op names\"> <label><input type=\"checkbox\" id=\"only-div\"> diverging only</label>{pager}<span id=\"count\"></span></div>\n{table}\n<thead><tr>",
        report.ops.len()
    ));
    for c in &columns {
        let num = c.right_aligned();
        // A metric sorts worst first on its first click, as the terminal view's keys do:
        // the largest first, but the cosine and the index (execution order) smallest first.
        let worst_first = num && !matches!(c, OpsColumn::Index | OpsColumn::Cosine);
        h.push_str(&format!(
            "<th{}{}>{}</th>",
            if num { " data-type=\"num\"" } else { "" },
            if worst_first { " data-desc=\"1\"" } else { "" },
            escape(c.label())
        ));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    // Rows are built one at a time, each for its line (`Rows::op`: a compact report's rows
    // are never built all at once).
    let rows = &report.ops;
    if !paged {
        // Each row, written out every 64 KiB of rows.
        for i in 0..rows.len() {
            if let Some(op) = rows.op(i) {
                op_row(report, &columns, first, i, &op, h);
            }
            if h.len() > 1 << 16 {
                flush(h, out)?;
            }
        }
        h.push_str("</tbody>\n</table>\n</section>\n");
        return Ok(());
    }
    h.push_str("</tbody>\n</table>\n");
    // The same pager below the table: a page is 1,000 rows long.
    h.push_str(&format!(
        "<div class=\"controls below\">{}<span id=\"count-below\"></span></div>\n",
        pager_buttons("-below")
    ));
    h.push_str(&format!(
        "<noscript><p class=\"warn\">This report has {} ops: the page's script shows them {PAGE_ROWS} at a time, and JavaScript is off (the JSON report has every op).</p></noscript>\n",
        report.ops.len()
    ));
    flush(h, out)?;
    // The pages, packed a batch at a time on every core, written in order: memory stays a
    // batch of pages whatever the report's size.
    let len = rows.len();
    let pages: Vec<Range<usize>> = (0..len)
        .step_by(PAGE_ROWS)
        .map(|from| from..len.min(from + PAGE_ROWS))
        .collect();
    let batch = rayon::current_num_threads().max(1) * 2;
    for group in pages.chunks(batch) {
        let texts: Vec<String> = group
            .par_iter()
            .map(|page| {
                let mut t = String::with_capacity(page.len() * 700);
                for i in page.clone() {
                    if let Some(op) = rows.op(i) {
                        op_row(report, &columns, first, i, &op, &mut t);
                    }
                }
                packed(&t)
            })
            .collect();
        for t in texts {
            out.write_all(format!("<script type=\"{PACKED}\" class=\"ops-rows\">").as_bytes())?;
            out.write_all(t.as_bytes())?;
            out.write_all(b"</script>\n")?;
        }
    }
    h.push_str("</section>\n");
    Ok(())
}

/// A paged table's ◀ ▶ buttons, their ids `prev` / `next` followed by `suffix`.
fn pager_buttons(suffix: &str) -> String {
    format!(
        "<button type=\"button\" id=\"prev{suffix}\" aria-label=\"previous page\">&#9664;</button><button type=\"button\" id=\"next{suffix}\" aria-label=\"next page\">&#9654;</button>"
    )
}

/// [`escape`]d text of a table row, its newlines as `&#10;` too: a row is one line (a paged
/// table's script splits its pages' text into rows at newlines; a probe name may hold one).
fn row_escape(s: &str) -> String {
    escape(s).replace('\n', "&#10;")
}

/// Row `i` of the ops table.
fn op_row(
    report: &Report,
    columns: &[OpsColumn],
    first: Option<usize>,
    i: usize,
    op: &OpResult,
    h: &mut String,
) {
    let mut class = vec![op.status.as_str()];
    if first == Some(i) {
        class.push("fd");
    }
    if matches!(
        divergence_names::Op::of(&op.name),
        divergence_names::Op::QkNorm(_)
    ) {
        class.push("qk");
    }
    h.push_str(&format!(
        "<tr id=\"op-{i}\" class=\"{}\" data-name=\"{}\" data-div=\"{}\">",
        class.join(" "),
        row_escape(&op.name),
        u8::from(op.status.is_divergence())
    ));
    for c in columns {
        let text = row_escape(&c.text(i, op, first == Some(i), Measure::of(&report.tolerance)));
        let cls = match c {
            OpsColumn::Name => " class=\"name\"",
            OpsColumn::Status => " class=\"s\"",
            _ if c.right_aligned() => " class=\"n\"",
            _ => "",
        };
        let data = match (c, column_value(*c, op)) {
            (OpsColumn::Index, _) => format!(" data-v=\"{i}\""),
            (_, Some((key, Some(v)))) => format!(" data-k=\"{key}\" data-v=\"{}\"", exact(v)),
            (_, Some((key, None))) => format!(" data-k=\"{key}\""),
            (_, None) => String::new(),
        };
        h.push_str(&format!("<td{cls}{data}>{text}</td>"));
    }
    h.push_str("</tr>\n");
}

fn not_compared(report: &Report, h: &mut String) {
    let unreadable = view::unreadable_ops(report);
    if report.only_ours.is_empty() && report.only_ref.is_empty() && unreadable.is_empty() {
        return;
    }
    h.push_str("<h2>Not compared</h2>\n<section id=\"not-compared\">\n<dl class=\"kv\">\n");
    if !report.only_ours.is_empty() {
        kv(h, "only in ours", &report.only_ours.join(", "));
    }
    if !report.only_ref.is_empty() {
        kv(h, "only in ref", &report.only_ref.join(", "));
    }
    for row in unreadable {
        kv(
            h,
            &format!("unreadable {}", row.name()),
            row.reason().as_deref().unwrap_or("-"),
        );
    }
    h.push_str("</dl>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_rfc_4648_whatever_the_writes() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            // every split of the input into two writes, and one byte at a time
            for cut in 0..=plain.len() {
                let mut out = Vec::new();
                let mut b = Base64::new(&mut out);
                b.write_all(&plain.as_bytes()[..cut]).unwrap();
                b.write_all(&plain.as_bytes()[cut..]).unwrap();
                b.finish().unwrap();
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    encoded,
                    "{plain:?} cut at {cut}"
                );
            }
            let mut out = Vec::new();
            let mut b = Base64::new(&mut out);
            for byte in plain.as_bytes() {
                b.write_all(&[*byte]).unwrap();
            }
            b.finish().unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), encoded);
        }
        // All 256 byte values, past one 64 KiB piece of text.
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut out = Vec::new();
        let mut b = Base64::new(&mut out);
        for piece in bytes.chunks(1_001) {
            b.write_all(piece).unwrap();
        }
        b.finish().unwrap();
        assert_eq!(out.len(), bytes.len().div_ceil(3) * 4);
        let value = |c: u8| BASE64.iter().position(|&a| a == c).unwrap() as u32;
        let mut back = Vec::new();
        for g in out.chunks(4) {
            let n = g
                .iter()
                .take_while(|&&c| c != b'=')
                .enumerate()
                .fold(0, |n, (k, &c)| n | value(c) << (18 - 6 * k));
            let keep = 3 - g.iter().filter(|&&c| c == b'=').count();
            back.extend_from_slice(&n.to_be_bytes()[1..1 + keep]);
        }
        assert_eq!(back, bytes);
    }

    #[test]
    fn exact_numbers_round_trip() {
        for x in [
            0.005218273174308169,
            1e-300,
            0.0,
            1.0,
            123456.789,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(exact(x).parse::<f64>().unwrap().to_bits(), x.to_bits());
        }
    }
}
