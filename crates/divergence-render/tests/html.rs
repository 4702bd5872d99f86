//! The HTML report and the growth-plot SVG: the page embeds exactly the JSON report, its table
//! shows exactly the report's numbers, it names no URL, its tags balance, user data (probe names)
//! is escaped, and ops with no error (0) or none (null) are drawn on their own rows.

use divergence_diff::*;
use divergence_render::{render_growth_svg, render_html, render_json};
use serde_json::Value;

/// A deterministic "activation": values of moderate size, no zeros.
fn act(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + 1.0) * 0.37 + seed as f32 * 1.3).sin() * 2.0 + 0.1)
        .collect()
}

const EVIL: &str = "model.layers.1.<script>alert('x')</script>&\"";

/// ops: embed (exact: rel err 0), two layers with q/k projections and norms, a probe whose
/// name carries markup, one only in the reference (null errors), layer 1 diverging.
fn report() -> Report {
    let cfg = DiffConfig::default();
    let names = [
        "model.embed_tokens",
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.q_norm",
        "model.layers.0.self_attn.k_proj",
        "model.layers.0.self_attn.k_norm",
        "model.layers.0",
        "model.layers.1.self_attn.k_proj",
        "model.layers.1.self_attn.k_norm",
        EVIL,
        "model.layers.1",
        "model.norm",
    ];
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let r = act(64, i as u32);
        let eps = match i {
            0 => 0.0,
            7.. => 0.05,
            _ => 1e-5 * (i as f32),
        };
        let o: Vec<f32> = r
            .iter()
            .enumerate()
            .map(|(j, x)| x * (1.0 + eps * ((j % 3) as f32 - 1.0)))
            .collect();
        let side = |v: &'static [f32]| Side {
            shape: &[1, 64],
            values: ValuesRef::F32(v),
            dtype: "float32",
        };
        let (o, r): (&'static [f32], &'static [f32]) = (o.leak(), r.leak());
        rows.push(compare(name, Some(side(o)), Some(side(r)), &cfg));
    }
    let only = act(64, 99).leak();
    rows.push(compare(
        "lm_head",
        None,
        Some(Side {
            shape: &[1, 64],
            values: ValuesRef::F32(only),
            dtype: "float32",
        }),
        &cfg,
    ));
    let ctx = ReportContext::new("ours <b>.npz", "ref.npz", OrderSource::RefMeta);
    assemble(rows, ctx, &cfg)
}

fn html(report: &Report) -> String {
    let mut out = Vec::new();
    render_html(report, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let a = s.find(start).unwrap_or_else(|| panic!("no {start}")) + start.len();
    let b = s[a..].find(end).unwrap_or_else(|| panic!("no {end}")) + a;
    &s[a..b]
}

/// The text of a packed script element (gzip in standard base64) unpacked, checked on the way:
/// only base64 characters, padded to whole groups.
fn unpack(text: &str) -> String {
    use std::io::Read;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert_eq!(text.len() % 4, 0, "base64 in whole groups");
    let mut bytes = Vec::with_capacity(text.len() / 4 * 3);
    for group in text.as_bytes().chunks(4) {
        let pad = group.iter().filter(|&&c| c == b'=').count();
        assert!(group[..4 - pad].iter().all(|c| ALPHABET.contains(c)));
        let n = group[..4 - pad].iter().enumerate().fold(0u32, |n, (k, c)| {
            n | (ALPHABET.iter().position(|a| a == c).unwrap() as u32) << (18 - 6 * k)
        });
        bytes.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    let mut out = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// The value of attribute `name` in a tag's text.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let a = tag.find(&key)? + key.len();
    Some(&tag[a..a + tag[a..].find('"')?])
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// A well-formedness check of the tags the renderer emits: every element is closed in order
/// (void elements and `/>` aside), script and style contents are skipped, and no `<` or `>`
/// appears in text or attribute values (everything there is escaped).
fn assert_well_formed(doc: &str) {
    const VOID: [&str; 4] = ["meta", "input", "br", "!DOCTYPE"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = doc;
    while let Some(lt) = rest.find('<') {
        assert!(
            !rest[..lt].contains('>'),
            "stray > in text before: {}",
            &rest[lt..(lt + 60).min(rest.len())]
        );
        let gt = rest[lt..].find('>').expect("unclosed tag") + lt;
        let tag = &rest[lt + 1..gt];
        assert!(!tag.contains('<'), "< inside a tag: {tag}");
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name, "</{name}> closes <{open}>");
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect();
        if tag.ends_with('/') || VOID.contains(&name.as_str()) {
            continue;
        }
        if name == "script" || name == "style" {
            let close = format!("</{name}>");
            let end = rest.find(&close).expect("unclosed script/style");
            rest = &rest[end + close.len()..];
            continue;
        }
        stack.push(name);
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn embeds_exactly_the_json_report() {
    let report = report();
    let page = html(&report);
    let embedded = between(
        &page,
        "<script type=\"application/json\" id=\"report\">",
        "</script>",
    );
    let mut json = Vec::new();
    render_json(&report, &mut json).unwrap();
    let expected: Value = serde_json::from_slice(&json).unwrap();
    let got: Value = serde_json::from_str(embedded).unwrap();
    assert_eq!(got, expected);
    // Markup in strings cannot end the script element early.
    assert!(!embedded.contains('<') && !embedded.contains('>'));
}

#[test]
fn the_table_shows_exactly_the_numbers_of_the_json_report() {
    let report = report();
    let page = html(&report);
    let tbody = between(&page, "<table id=\"ops-table\">", "</table>");
    let rows: Vec<&str> = tbody.split("<tr id=\"op-").skip(1).collect();
    check_rows(&report, &rows);
}

/// `rows` (each the text after `<tr id="op-`) are the report's ops in order, with exactly the
/// numbers of its JSON form.
fn check_rows(report: &Report, rows: &[&str]) {
    let mut json = Vec::new();
    render_json(report, &mut json).unwrap();
    let json: Value = serde_json::from_slice(&json).unwrap();
    let ops = json["ops"].as_array().unwrap();
    assert_eq!(rows.len(), ops.len());
    let mut checked = 0;
    for (i, row) in rows.iter().enumerate() {
        let tr = &row[..row.find('>').unwrap()];
        assert!(tr.starts_with(&format!("{i}\"")), "row {i}: {tr}");
        assert_eq!(
            unescape(attr(tr, "data-name").unwrap()),
            ops[i]["name"].as_str().unwrap()
        );
        for td in row.split("<td").skip(1) {
            let open = &td[..td.find('>').unwrap()];
            let text = &td[open.len() + 1..td.find("</td>").unwrap()];
            let Some(key) = attr(open, "data-k") else {
                continue;
            };
            let want = &ops[i][key];
            match attr(open, "data-v") {
                Some(v) => {
                    let got: f64 = v.parse().unwrap();
                    let want = want
                        .as_f64()
                        .unwrap_or_else(|| panic!("{key} of #{i} is null"));
                    assert_eq!(got.to_bits(), want.to_bits(), "{key} of #{i}");
                    if key != "cosine" && key != "frac_outside_tol" {
                        assert_eq!(text, sci(want), "{key} of #{i}");
                    }
                    checked += 1;
                }
                None => {
                    assert!(want.is_null(), "{key} of #{i}: {want}");
                    assert_eq!(text, "-");
                }
            }
        }
    }
    assert!(
        checked >= 6 * (ops.len() - 1),
        "only {checked} numbers checked"
    );
}

/// `n` ops of decode-step names, op `bad` diverging (and none after it checked).
fn many(n: usize, bad: usize) -> Report {
    let cfg = DiffConfig::default();
    let r: &'static [f32] = act(32, 1).leak();
    let o: &'static [f32] = r.iter().map(|x| x * 1.5).collect::<Vec<f32>>().leak();
    let side = |v: &'static [f32]| Side {
        shape: &[1, 32],
        values: ValuesRef::F32(v),
        dtype: "float32",
    };
    let rows: Vec<_> = (0..n)
        .map(|i| {
            let name = format!("model.layers.{}.mlp@{}", i % 28, i / 28);
            compare(
                &name,
                Some(side(if i == bad { o } else { r })),
                Some(side(r)),
                &cfg,
            )
        })
        .collect();
    let ctx = ReportContext::new("ours.npz", "ref.npz", OrderSource::RefMeta);
    assemble(rows, ctx, &cfg)
}

#[test]
fn a_large_report_shows_its_table_a_page_at_a_time() {
    // 38,489 rows in the live table took ~19 s to open in Chromium (docs/html-report.md).
    let report = many(2_500, 2_300);
    let page = html(&report);
    assert_well_formed(&page);
    let head = between(&page, "<table id=\"ops-table\"", ">");
    assert_eq!(
        head,
        " data-paged=\"1\" data-page=\"1000\" data-ops=\"2500\" data-first=\"2300\""
    );
    let table = between(&page, "<table id=\"ops-table\"", "</table>");
    assert!(!table.contains("<tr id="), "no row is built at load");
    // Every row waits, one a line, in packed pages of 1,000 (gzip in base64), in order, with
    // the numbers of the JSON.
    let section = between(&page, "<section id=\"ops\">", "</section>");
    let chunks: Vec<String> = section
        .split("<script type=\"application/gzip+base64\" class=\"ops-rows\">")
        .skip(1)
        .map(|c| unpack(&c[..c.find("</script>").unwrap()]))
        .collect();
    let sizes: Vec<usize> = chunks.iter().map(|c| c.matches("<tr ").count()).collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    for c in &chunks {
        assert!(c
            .lines()
            .all(|l| l.starts_with("<tr id=\"op-") && l.ends_with("</tr>")));
    }
    let rows: Vec<&str> = chunks
        .iter()
        .flat_map(|c| c.split("<tr id=\"op-").skip(1))
        .collect();
    check_rows(&report, &rows);
    assert!(rows[2300].contains("class=\"diverged fd\""));
    // The JSON report, packed the same way, is the JSON report.
    let embedded = between(
        &page,
        "<script type=\"application/gzip+base64\" id=\"report\">",
        "</script>",
    );
    let mut json = Vec::new();
    render_json(&report, &mut json).unwrap();
    let expected: Value = serde_json::from_slice(&json).unwrap();
    let got: Value = serde_json::from_str(&unpack(embedded)).unwrap();
    assert_eq!(got, expected);
    // Packed, the rows and the JSON take a fraction of their text (~10x less at 256 steps).
    let packed_len = embedded.len() + section.matches(|c: char| c.is_ascii_alphanumeric()).count();
    let text_len = json.len() + chunks.iter().map(String::len).sum::<usize>();
    assert!(packed_len * 4 < text_len, "{packed_len} against {text_len}");
    // The pager, above the table and again below it (the same buttons and count line), and
    // the paged script, which draws both; the small table's script stops at once on it.
    let above = between(section, "<div class=\"controls\">", "</div>");
    let below = between(
        section,
        "</table>\n<div class=\"controls below\">",
        "</div>",
    );
    for (pager, suffix) in [(above, ""), (below, "-below")] {
        for id in ["prev", "next", "count"] {
            assert_eq!(
                pager.matches(&format!("id=\"{id}{suffix}\"")).count(),
                1,
                "{pager}"
            );
        }
        assert_eq!(pager.matches("<button").count(), 2, "{pager}");
    }
    assert!(page.contains("[['prev','next','count'],['prev-below','next-below','count-below']]"));
    assert!(page.contains("querySelectorAll('script.ops-rows')"));
    assert!(page.contains("window.divergenceReport="));
    // A name with a newline stays on its row's line (the page's script splits pages into
    // rows at newlines): shown escaped, `\n`, as every text renderer shows it (since
    // 2026-12-05; written `&#10;` before).
    let mut odd = many(2_001, 5);
    odd.ops[7].name = "model.layers.7.mlp\nsecond line".into();
    let odd_page = html(&odd);
    let first_pack = between(
        &odd_page,
        "<script type=\"application/gzip+base64\" class=\"ops-rows\">",
        "</script>",
    );
    let rows_text = unpack(first_pack);
    assert_eq!(rows_text.lines().count(), 1000);
    assert!(rows_text.contains("data-name=\"model.layers.7.mlp\\nsecond line\""));
    // 2,000 ops or fewer: every row in the table, as before.
    let small = html(&many(2_000, 5));
    let table = between(&small, "<table id=\"ops-table\">", "</table>");
    assert_eq!(table.matches("<tr id=\"op-").count(), 2_000);
    assert!(!small.contains("ops-rows\">") && !small.contains("id=\"next\""));
    assert!(!small.contains("controls below") && !small.contains("id=\"next-below\""));
    assert!(!small.contains("gzip+base64\" id") && small.contains("window.divergenceReport="));
}

#[test]
fn self_contained_well_formed_and_escaped() {
    let page = html(&report());
    for needle in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(!page.contains(needle), "the page contains {needle}");
    }
    assert_well_formed(&page);
    // The only script elements are ours; the evil name appears escaped, never raw.
    assert_eq!(page.matches("<script").count(), 2);
    assert!(!page.contains("<script>alert"));
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
    assert!(page.contains("ours &lt;b&gt;.npz"));
    // Sections of the issue.
    for id in [
        "id=\"growth\"",
        "id=\"heatmap\"",
        "id=\"ops-table\"",
        "id=\"filter\"",
        "id=\"first-divergence\"",
    ] {
        assert!(page.contains(id), "{id}");
    }
}

/// Bidirectional overrides, marks, line separators and invisible characters in a name or a
/// file name are shown escaped on the page, as in every text renderer (a name could show
/// reversed: a bad-input hunt found them raw in cells, SVG titles and the origin line); the
/// embedded JSON keeps every string as it is.
#[test]
fn hidden_and_bidirectional_characters_are_shown_escaped_and_kept_in_the_json() {
    let hidden = "model.layers.1.self_attn.k_norm\u{202e}mron_k\u{200f}\u{2028}\u{feff}";
    let mut report = report();
    for o in report.ops.iter_mut() {
        if o.name.as_ref() == "model.layers.1.self_attn.k_norm" {
            o.name = Name::from(hidden);
        }
    }
    if let Some(f) = report.first_divergence.as_mut() {
        f.name = hidden.to_string();
    }
    report.ours = "ours\u{202e}zpn.npz".to_string();
    let page = html(&report);
    let embedded = between(
        &page,
        "<script type=\"application/json\" id=\"report\">",
        "</script>",
    );
    let shown = page.replace(embedded, "");
    for c in ['\u{202e}', '\u{200f}', '\u{2028}', '\u{feff}'] {
        assert!(!shown.contains(c), "{c:?} raw on the page");
        assert!(embedded.contains(c), "{c:?} not kept in the JSON");
    }
    assert!(shown.contains("k_norm\\u{202e}mron_k\\u{200f}\\u{2028}\\u{feff}"));
    assert!(shown.contains("ours\\u{202e}zpn.npz"));
    let got: Value = serde_json::from_str(embedded).unwrap();
    assert_eq!(got["ours"], "ours\u{202e}zpn.npz");
}

#[test]
fn growth_svg_standalone_marks_zero_null_and_first_divergence() {
    let report = report();
    let mut out = Vec::new();
    render_growth_svg(&report, &mut out).unwrap();
    let svg = String::from_utf8(out).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_well_formed(&svg);
    // No coordinate came from log10(0) or a null.
    for bad in ["NaN", "inf", "-inf"] {
        assert!(!svg.contains(bad), "{bad} in the SVG");
    }
    // The embed op (rel err 0) sits on the `0` row, lm_head (only in ref) on the `n/a` row.
    assert!(svg.contains(">0</text>") && svg.contains(">n/a</text>"));
    assert!(report.ops[0].errors.rel_l2_err == Some(0.0));
    assert!(report.ops.last().unwrap().errors.rel_l2_err.is_none());
    let first = report.first_divergence.as_ref().unwrap();
    assert!(svg.contains(&format!("first divergence: #{} ", first.index)));
    // Layer labels and the tolerance legend.
    assert!(svg.contains(">L0</text>") && svg.contains(">L1</text>"));
    assert!(svg.contains("tolerance"));
    // Tooltips name every op, escaped.
    assert!(svg.contains("&lt;script&gt;"));
    assert!(!svg.contains("<script"));
    // q_norm / k_norm are diamonds (paths with a tooltip).
    assert_eq!(
        svg.matches("<path d=\"M").count() - 1,
        3,
        "3 norms + the legend's diamond"
    );
}

#[test]
fn heatmap_has_a_cell_per_layer_and_op_kind_and_a_legend() {
    let page = html(&report());
    let heat = between(&page, "<section id=\"heatmap\">", "</section>");
    for label in [
        ">q_proj</text>",
        ">k_norm</text>",
        ">output</text>",
        ">L0</text>",
        ">L1</text>",
    ] {
        assert!(heat.contains(label), "{label}");
    }
    // Diverged cells have a black border; the legend explains colours, 0 and n/a.
    assert!(heat.contains("stroke=\"#000\""));
    assert!(heat.contains("worst rel L2 error"));
    assert!(heat.contains("n/a (not compared)"));
}

#[test]
fn an_empty_report_still_renders() {
    let cfg = DiffConfig::default();
    let report = assemble(
        Vec::new(),
        ReportContext::new("a", "b", OrderSource::RefMeta),
        &cfg,
    );
    let page = html(&report);
    assert_well_formed(&page);
    // nothing compared: no verdict, never "no divergence"
    assert!(page.contains("NOTHING COMPARED"));
    assert!(!page.contains("No divergence"));
    assert!(!page.contains("id=\"heatmap\""));
    let mut out = Vec::new();
    render_growth_svg(&report, &mut out).unwrap();
    assert_well_formed(&String::from_utf8(out).unwrap());
}

#[test]
fn the_position_chart_has_a_bar_per_position_red_where_over_tolerance() {
    // Positions 0-1 exact, 2 within tolerance, 3-5 over it: a profile "from 3 on".
    let (t, c) = (6usize, 8usize);
    let r: Vec<f64> = (0..t * c).map(|k| 1.0 + k as f64 * 0.01).collect();
    let err = [0.0, 0.0, 1e-5, 0.1, 0.2, 0.3];
    let o: Vec<f64> = (0..t * c).map(|k| r[k] * (1.0 + err[k / c])).collect();
    let shape = [1, t, c];
    let name = "model.layers.0.mlp";
    let mut report = report();
    report.positions = position_profile(
        name,
        ValuesRef::F64(&o),
        ValuesRef::F64(&r),
        &shape,
        1,
        1e-3,
        0.0,
    );
    assert_eq!(
        report.positions.as_ref().unwrap().pattern,
        PositionPattern::From { start: 3 }
    );
    let doc = html(&report);
    assert_well_formed(&doc);
    let section = between(&doc, "<section id=\"positions\">", "</section>");
    let bars: Vec<&str> = section
        .split("<rect")
        .skip(2) // the background
        .collect();
    assert_eq!(bars.len(), 4, "positions 2-5 have an error > 0: {section}");
    let red = bars.iter().filter(|b| b.contains("#d55e00")).count();
    assert_eq!(red, 3, "positions 3-5 are over the tolerance");
    assert_eq!(
        section.matches("<circle").count(),
        2,
        "positions 0-1 are exact"
    );
    assert!(section.contains("position 4: rel err 2.000e-01, tolerance 1.000e-03"));
    assert!(doc.contains("error from position 3 on (3 of 6 positions;"));
    // A profile that numbers its entries (logits kept for a 16-token prompt's last 6 rows):
    // the bars' titles and the axis's ticks name those token positions, not the indices.
    let mut numbered = report.clone();
    let p = numbered.positions.as_mut().unwrap();
    p.op = "lm_head".to_string();
    p.positions = (10..16).collect();
    let doc = html(&numbered);
    let section = between(&doc, "<section id=\"positions\">", "</section>");
    assert!(section.contains("position 14: rel err 2.000e-01, tolerance 1.000e-03"));
    assert!(!section.contains("position 4: rel err"));
    // The ticks: the centred texts that are numbers.
    let ticks: Vec<usize> = section
        .split("<text")
        .skip(1)
        .filter(|t| t.contains("text-anchor=\"middle\""))
        .filter_map(|t| between(t, ">", "</text>").parse().ok())
        .collect();
    assert_eq!(ticks, (10..16).collect::<Vec<_>>(), "{section}");
    assert!(doc.contains("error from position 13 on (3 of 6 positions;"));
    // No profile, no section.
    report.positions = None;
    assert!(!html(&report).contains("id=\"positions\""));
}

#[test]
fn the_first_divergence_says_its_origin_and_an_earlier_step_of_it() {
    let mut report = report();
    let first = report.first_divergence.clone().unwrap();
    let o = report.origin.as_mut().expect("an origin");
    assert_eq!(o.earlier, None);
    let page = html(&report);
    assert!(
        page.contains("<dt>origin</dt><dd>crossed the line at "),
        "{page}"
    );
    // (The rows are not decode steps: made up, to see it said.)
    report.origin.as_mut().unwrap().earlier = Some(EarlierStep {
        name: "model.layers.0.self_attn.k_norm@1".into(),
        index: 4,
        step: 1,
        error: 5e-4,
        local_growth: Some(500.0),
    });
    let said = "the same op already added error at decode step 1, within the tolerance: \
                model.layers.0.self_attn.k_norm@1 (#4, rel err 5.000e-04, local growth ×5.000e+02)";
    let page = html(&report);
    assert!(page.contains(said), "{page}");
    let mut out = Vec::new();
    divergence_render::render_table(&report, &Default::default(), &mut out).unwrap();
    let table = String::from_utf8(out).unwrap();
    assert!(table.contains(&first.name), "{table}");
    // The table wraps its lines: compare without the line breaks and their indents.
    let flat = table.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains(said), "{table}");
    // With the truth, traced by relative error where the truth does not judge the row.
    report.tolerance = Tolerance::Truth { ratio: 3.0 };
    report.origin.as_mut().unwrap().by_rel_err = true;
    let page = html(&report);
    assert!(
        page.contains(&format!(
            "{said} (by relative error: the truth does not judge the first divergence)"
        )),
        "{page}"
    );
}

#[test]
fn the_growth_plot_marks_an_earlier_origin() {
    let mut report = report();
    let first = report.first_divergence.clone().unwrap();
    // An origin at an earlier op than the first divergence gets its own dashed line and label.
    let o = report.origin.get_or_insert_with(|| Origin {
        name: String::new(),
        index: 0,
        growth: None,
        chain: Vec::new(),
        earlier: None,
        by_rel_err: false,
        unmeasured_inputs: Vec::new(),
    });
    o.index = 1;
    o.name = report.ops[1].name.to_string();
    assert_ne!(first.index, 1);
    let mut out = Vec::new();
    render_growth_svg(&report, &mut out).unwrap();
    let svg = String::from_utf8(out).unwrap();
    assert_well_formed(&svg);
    assert!(
        svg.contains(&format!(
            "origin (error born here): #1 {}",
            report.ops[1].name
        )),
        "{svg}"
    );
    // Born at the first divergence itself: no second mark.
    let o = report.origin.as_mut().unwrap();
    o.index = first.index;
    o.name = first.name.clone();
    let mut out = Vec::new();
    render_growth_svg(&report, &mut out).unwrap();
    assert!(!String::from_utf8(out)
        .unwrap()
        .contains("origin (error born here)"));
}

#[test]
fn the_position_chart_keeps_its_tolerance_above_the_base_of_the_bars() {
    // Every position over a tolerance of 1.001e-3 (rel err 0.5 everywhere, as the 537-op
    // benchmark's act_fn): the axis starts at 1e-4, a decade under the tolerance, not at 1e-3
    // where the bars start.
    let (t, c) = (8usize, 16usize);
    let r: Vec<f64> = (0..t * c).map(|k| 1.0 + k as f64 * 0.01).collect();
    let o: Vec<f64> = r.iter().map(|x| x * 1.5).collect();
    let mut report = report();
    report.positions = position_profile(
        "model.layers.0.mlp",
        ValuesRef::F64(&o),
        ValuesRef::F64(&r),
        &[1, t, c],
        1,
        1e-3,
        1e-6,
    );
    let doc = html(&report);
    let section = between(&doc, "<section id=\"positions\">", "</section>");
    assert!(section.contains(">-4</tspan>") && section.contains(">0</tspan>"));
    assert!(!section.contains(">-5</tspan>"));
    // The bars start at the lowest decade (y = 196); the tolerance line is a decade over it.
    let bottom = 196.0;
    let decade = (196.0 - 16.0) / 4.0;
    let tol = section
        .split("<polyline ")
        .skip(1)
        .find(|p| p.contains("stroke-dasharray"))
        .unwrap_or_else(|| panic!("no tolerance line: {section}"));
    for point in attr(&format!(" {tol}"), "points").unwrap().split(' ') {
        let y: f64 = point.split(',').nth(1).unwrap().parse().unwrap();
        assert!(y <= bottom - decade + 1e-6, "{y}");
    }
}

#[test]
fn one_diverged_op_among_hundreds_stands_out_in_the_growth_plot() {
    // 300 ops within tolerance but the 150th: its marker is no smaller than in a small report,
    // ringed in white, drawn after every ok marker, in a white disc with a vermillion ring.
    let svg = growth_of_300(|i| i == 150);
    let circles: Vec<&str> = svg.split("<circle ").skip(1).collect();
    let with_title: Vec<&&str> = circles.iter().filter(|c| c.contains("<title>")).collect();
    assert_eq!(with_title.len(), 300);
    let bad = with_title.last().unwrap();
    assert!(
        bad.contains("<title>#150 "),
        "the diverged marker is drawn last"
    );
    assert!(bad.contains("fill=\"#d55e00\" stroke=\"#fff\""), "{bad}");
    let radius = |c: &str| attr(&format!(" {c}"), "r").unwrap().parse::<f64>().unwrap();
    assert!(radius(bad) >= 3.6, "{bad}");
    assert!(
        radius(with_title[0]) < 3.0,
        "ok markers stay small at 300 ops"
    );
    let halo = circles
        .iter()
        .find(|c| c.contains("fill=\"#fff\" stroke=\"#d55e00\""))
        .expect("a halo around the first divergence");
    let at = |c: &str, k: &str| attr(&format!(" {c}"), k).unwrap().to_string();
    assert_eq!(
        (at(halo, "cx"), at(halo, "cy")),
        (at(bad, "cx"), at(bad, "cy"))
    );
    assert!(radius(halo) > radius(bad) + 3.0);
    // Under the markers: the halo comes before the first ok marker.
    assert!(svg.find(&format!("<circle {halo}")).unwrap() < svg.find("<title>#0 ").unwrap());
    // Half of them diverged: one size for all, in execution order, no white rings (they would
    // hide the ok ones and the tolerance line); the halo stays.
    let svg = growth_of_300(|i| i >= 150);
    let circles: Vec<&str> = svg.split("<circle ").skip(1).collect();
    assert!(circles
        .iter()
        .filter(|c| c.contains("<title>"))
        .all(|c| radius(c) < 3.0 && !c.contains("stroke=\"#fff\"")));
    assert!(svg.find("<title>#149 ").unwrap() < svg.find("<title>#150 ").unwrap());
    assert!(svg.find("<title>#150 ").unwrap() < svg.find("<title>#151 ").unwrap());
    assert!(circles
        .iter()
        .any(|c| c.contains("fill=\"#fff\" stroke=\"#d55e00\"")));
}

/// The growth plot of 300 `down_proj` ops, those `diverged` scaled by 1.5.
fn growth_of_300(diverged: impl Fn(usize) -> bool) -> String {
    let cfg = DiffConfig::default();
    let r = act(64, 1).leak();
    let rows: Vec<OpResult> = (0..300)
        .map(|i| {
            let scale = if diverged(i) { 1.5 } else { 1.0 + 1e-6 };
            let o: &'static [f32] = r.iter().map(|x| x * scale).collect::<Vec<_>>().leak();
            let side = |v: &'static [f32]| Side {
                shape: &[1, 64],
                values: ValuesRef::F32(v),
                dtype: "float32",
            };
            let name = format!("model.layers.{i}.mlp.down_proj");
            compare(&name, Some(side(o)), Some(side(r)), &cfg)
        })
        .collect();
    let report = assemble(
        rows,
        ReportContext::new("a", "b", OrderSource::RefMeta),
        &cfg,
    );
    assert_eq!(report.first_divergence.as_ref().unwrap().index, 150);
    let mut out = Vec::new();
    render_growth_svg(&report, &mut out).unwrap();
    let svg = String::from_utf8(out).unwrap();
    assert_well_formed(&svg);
    svg
}

#[test]
fn the_page_is_written_as_it_is_made() {
    // Made whole first, a 256-step decode's 272 MB page took 887 MB (docs/html-report.md):
    // the ops table goes out a few rows at a time and the JSON as serde writes it.
    struct Writes {
        total: usize,
        largest: usize,
    }
    impl std::io::Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.total += buf.len();
            self.largest = self.largest.max(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let report = many(5_000, 4_000);
    let mut w = Writes {
        total: 0,
        largest: 0,
    };
    render_html(&report, &mut w).unwrap();
    let mut json = Vec::new();
    render_json(&report, &mut json).unwrap();
    assert_eq!(w.total, html(&report).len());
    // No piece holds the table or the JSON: at most the growth plot, or 64 KiB of rows.
    let growth = {
        let mut svg = Vec::new();
        divergence_render::render_growth_svg(&report, &mut svg).unwrap();
        svg.len()
    };
    assert!(
        w.largest <= growth.max(1 << 17) && w.largest < json.len() / 2,
        "largest write {} of {} (growth {growth}, JSON {})",
        w.largest,
        w.total,
        json.len()
    );
}

#[test]
fn a_dense_growth_plot_keeps_every_visible_dot_and_the_first_divergence() {
    // 20,000 ops on 1,240 px: an ok marker that a later one of its cell (1 x 2 px) covers is
    // left out (a 64-step decode's 38,489 made most of the page's elements).
    let cfg = DiffConfig::default();
    let r: &'static [f32] = act(64, 1).leak();
    let n = 20_000;
    // The report of n ops named as decode steps, op i's ours from ref by `ours(i, j, x)`
    // (element j of value x), and its growth plot.
    let growth = |ours: &dyn Fn(usize, usize, f32) -> f32| {
        let rows: Vec<OpResult> = (0..n)
            .map(|i| {
                let o: &'static [f32] = r
                    .iter()
                    .enumerate()
                    .map(|(j, &x)| ours(i, j, x))
                    .collect::<Vec<_>>()
                    .leak();
                let side = |v: &'static [f32]| Side {
                    shape: &[1, 64],
                    values: ValuesRef::F32(v),
                    dtype: "float32",
                };
                compare(
                    &format!("model.layers.{}.mlp@{}", i % 28, i / 28),
                    Some(side(o)),
                    Some(side(r)),
                    &cfg,
                )
            })
            .collect();
        let report = assemble(
            rows,
            ReportContext::new("a", "b", OrderSource::RefMeta),
            &cfg,
        );
        let mut out = Vec::new();
        render_growth_svg(&report, &mut out).unwrap();
        (report, String::from_utf8(out).unwrap())
    };
    let bad = |i: usize| i % 4_999 == 4_000;
    let (_, svg) = growth(&|i, j, x| {
        // A few error levels, as noise gives (a decode step's rows repeat each layer's).
        let eps = if bad(i) {
            0.5
        } else {
            1e-4 * (1 + i % 3 * 3) as f32
        };
        x * (1.0 + eps * ((j % 3) as f32 - 1.0))
    });
    assert_well_formed(&svg);
    let markers = svg.matches("<circle").count() + svg.matches("<path").count();
    assert!(markers < n / 4, "{markers} markers for {n} ops");
    // Every diverged op, and at each error level the last op (on top of its cell).
    for i in (0..n).filter(|&i| bad(i)) {
        assert!(
            svg.contains(&format!("<title>#{i} ")),
            "diverged #{i} not drawn"
        );
    }
    for level in 0..3 {
        let last = (0..n).rev().find(|&i| !bad(i) && i % 3 == level).unwrap();
        assert!(
            svg.contains(&format!("<title>#{last} ")),
            "#{last} not drawn"
        );
    }
    // A decode bug diverges at every step after its own: diverged markers are thinned the
    // same way (per colour: a later ok op's marker is not a diverged one's), the first
    // divergence kept.
    let (report, svg) = growth(&|i, _, x| {
        let eps = if i >= 10_001 {
            0.1 * (1 + i % 3) as f32
        } else {
            1e-4
        };
        x * (1.0 + eps)
    });
    assert_eq!(report.first_divergence.as_ref().unwrap().index, 10_001);
    let markers = svg.matches("<circle").count() + svg.matches("<path").count();
    assert!(
        markers < n / 8,
        "{markers} markers for {n} ops, 9,999 diverged"
    );
    for i in [10_001, n - 1, n - 2, n - 3, 10_000] {
        assert!(svg.contains(&format!("<title>#{i} ")), "#{i} not drawn");
    }
    // 300 ops: every marker, as before.
    let few = growth_of_300(|i| i == 150);
    assert_eq!(few.matches("<title>#").count(), 300);
}

#[test]
fn a_profile_of_a_million_positions_is_drawn_in_bins() {
    // 1,048,576 positions (the most a profile holds), every one over the tolerance, position
    // 700,001 the worst: at most 2,000 bars, each the worst of its bin of 525 positions, its
    // tooltip the range; a bar a position made a 2.3 GB page of 10 million (session 31).
    let t = 1 << 20;
    let r = vec![1.0f32; t];
    let mut o = vec![2.0f32; t];
    o[700_001] = 4.0;
    let mut report = report();
    report.positions = position_profile(
        "model.embed_tokens",
        ValuesRef::F32(&o),
        ValuesRef::F32(&r),
        &[1, t, 1],
        1,
        1e-3,
        0.0,
    );
    assert_eq!(report.positions.as_ref().map(|p| p.rel_err.len()), Some(t));
    let doc = html(&report);
    assert_well_formed(&doc);
    let section = between(&doc, "<section id=\"positions\">", "</section>");
    let bars = section.matches("<rect").count() - 1; // the background
    assert_eq!(bars, t.div_ceil(525), "one bar a bin of 525 positions");
    assert!(
        section.contains(
            "positions 699825 to 700349 (525 entries, 525 over the tolerance): worst at position 700001: rel err 3.000e+00, tolerance 1.000e-03"
        ),
        "{}",
        &section[..2000]
    );
    assert!(section.contains("a bar the worst of 525 positions"));
    // The embedded JSON, every position, is packed: the page stays small.
    assert!(doc.contains("<script type=\"application/gzip+base64\" id=\"report\">"));
    assert!(doc.len() < 2_000_000, "{} bytes", doc.len());
}

#[test]
fn the_heatmap_draws_the_layers_the_table_lists() {
    // 2,000 layers, layer 1,500 the first divergence: the heatmap draws 1,024 of them (as the
    // table lists them: the first divergence's layer, then the first layers) and says how many
    // it leaves out; a row per layer of 1,048,576 layers made a 433 MB page (session 31).
    let ops: Vec<OpResult> = (0..2_000)
        .map(|l| {
            let status = if l == 1_500 { "diverged" } else { "ok" };
            serde_json::from_value(serde_json::json!({
                "name": format!("model.layers.{l}.mlp"), "status": status,
                "rel_l2_err": if l == 1_500 { 0.5 } else { 0.0 }, "layer": l,
            }))
            .unwrap()
        })
        .collect();
    let report = assemble(
        ops,
        ReportContext::new("ours", "ref", OrderSource::RefMeta),
        &DiffConfig::default(),
    );
    let doc = html(&report);
    assert_well_formed(&doc);
    let section = between(&doc, "<section id=\"heatmap\">", "</section>");
    let rows: Vec<&str> = section
        .split("<text")
        .skip(1)
        .filter_map(|t| {
            t.split_once('>')?
                .1
                .split_once("</text>")?
                .0
                .strip_prefix('L')
        })
        .filter(|l| l.parse::<usize>().is_ok())
        .collect();
    assert_eq!(rows.len(), 1_024);
    assert_eq!(rows[..3], ["0", "1", "2"]);
    assert_eq!(rows.last(), Some(&"1500"));
    assert!(section.contains(
        "<p class=\"note\">Layers not drawn: 976 more layers, none with a diverged op (the heatmap draws at most 1024; the JSON report has every op).</p>"
    ));
    // Within the cap, every layer and no line.
    let small = assemble(
        (0..10)
            .map(|l| {
                serde_json::from_value(serde_json::json!({
                    "name": format!("model.layers.{l}.mlp"), "status": "ok",
                    "rel_l2_err": 0.0, "layer": l,
                }))
                .unwrap()
            })
            .collect::<Vec<OpResult>>(),
        ReportContext::new("ours", "ref", OrderSource::RefMeta),
        &DiffConfig::default(),
    );
    let doc = html(&small);
    let section = between(&doc, "<section id=\"heatmap\">", "</section>");
    assert_eq!(section.matches(">L").count(), 10);
    assert!(!section.contains("Layers not drawn"));
}

/// The heatmap's columns are in execution order: the decode steps' cache slots (`cache_k`,
/// `cache_v`, which the prefill has not) after `rope_k`, where a cache bug is born, not after
/// every op of the prefill (a visual check).
#[test]
fn the_heatmap_puts_the_cache_columns_where_the_cache_is_written() {
    let cfg = DiffConfig::default();
    let ops = [
        "self_attn.k_proj",
        "self_attn.rope_k",
        "self_attn.attn_out",
        "mlp",
    ];
    let step_ops = [
        "self_attn.k_proj",
        "self_attn.rope_k",
        "self_attn.cache_k",
        "self_attn.cache_v",
        "self_attn.attn_out",
        "mlp",
    ];
    let mut rows = Vec::new();
    for (step, list) in [(0usize, &ops[..]), (1, &step_ops[..])] {
        for (i, op) in list.iter().enumerate() {
            let name = divergence_names::step_name(&format!("model.layers.0.{op}"), step);
            let r: &'static [f32] = act(16, i as u32).leak();
            let side = Side {
                shape: &[1, 16],
                values: ValuesRef::F32(r),
                dtype: "float32",
            };
            rows.push(compare(&name, Some(side), Some(side), &cfg));
        }
    }
    let report = assemble(
        rows,
        ReportContext::new("a", "b", OrderSource::RefMeta),
        &cfg,
    );
    let page = html(&report);
    let heat = between(&page, "<section id=\"heatmap\">", "</section>");
    let at = |label: &str| {
        heat.find(&format!(">{label}</text>"))
            .unwrap_or_else(|| panic!("{label}: {heat}"))
    };
    assert!(at("rope_k") < at("cache_k"), "{heat}");
    assert!(
        at("cache_k") < at("cache_v") && at("cache_v") < at("attn_out"),
        "{heat}"
    );
}
