//! `diff --map`: which name map applies to our dump (a file, a preset, or the one our dump's
//! metadata records), the model sizes its rules may name, and our dump seen through it
//! ([`divergence_map::MappedDump`]).

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};
use divergence_dump::Dump;
use divergence_map::{Map, MapError, MappedDump, Sizes};

/// Our dump under its map (or as it is, without one), the report warnings the map calls for,
/// and its notes (how many of our tensors it named: what a map is for, no warning; a
/// newcomer's check read it among the warnings on every `--map` run).
pub fn apply<'a>(
    ours: &'a Dump,
    reference: &Dump,
    map: Option<Map>,
    model: Option<&Path>,
) -> Result<(MappedDump<'a>, Vec<String>, Vec<String>)> {
    let Some(map) = map else {
        return Ok((MappedDump::plain(ours), Vec::new(), Vec::new()));
    };
    let mut notes = Vec::new();
    let (sizes, size_issues) = sizes(model, ours, reference);
    // A config passed over is said (a `--model` whose config.json rejects a size is not used
    // silently); with none left, the rejected fields go with the map's error.
    let mut warnings = Vec::new();
    if let (Some(used), false) = (&size_issues.used, size_issues.rejected.is_empty()) {
        warnings.push(format!(
            "name map: model sizes from {used}, passed over a config that rejects one: {}",
            size_issues.rejected.join("; ")
        ));
    }
    let label = one_line(&ours.path().display().to_string());
    let resolved =
        divergence_map::resolve(&map, &tensors_of(ours), &sizes, &label).map_err(|e| {
            // Resolving meets our dump's tensors: the message names the dump (a bad-input hunt
            // read "preset vllm: `...q_proj` is made twice" and "... needs the model size
            // `heads`" without the file), but where it names it already.
            let e = match e {
                MapError::Unused { .. } | MapError::NoTarget { .. } => e.to_string(),
                _ => format!("{label}: {e}"),
            };
            match size_issues.used.is_some() || size_issues.rejected.is_empty() {
                true => anyhow::Error::msg(e),
                false => anyhow::anyhow!(
                    "{e} (model sizes rejected: {})",
                    size_issues.rejected.join("; ")
                ),
            }
        })?;
    let made: Vec<&divergence_map::Virtual> = resolved
        .tensors
        .iter()
        .filter(|v| v.rule.is_some())
        .collect();
    let ours_made = made.iter().filter(|v| reference.contains(&v.name)).count();
    wrong_way_round(&map, ours_made, ours, reference, &sizes)?;
    // (A tensor a preset's rule did not fit is made by nothing: its own warning names it.)
    let computed = made
        .iter()
        .filter(|v| v.is_transformed() && v.problem.is_none())
        .count();
    // A map that names none of our tensors (only a preset, an `all_optional` map or one whose
    // every rule is `optional` can: a rule of any other map that matches nothing is an error)
    // is most likely the wrong one (a newcomer's run: the llama.cpp preset on a vLLM dump
    // paired vLLM's fused act_fn with transformers' by name, a false divergence, under "0 of
    // our tensors named").
    if made.is_empty() {
        // ...and where few of our names are the reference's either, the probes that pair
        // by their own names are another layout's namesakes (a bad-input hunt: the llama.cpp
        // preset on a vLLM dump compared vLLM's `mlp.act_fn`, silu(gate) * up, with
        // transformers', exit 1 on a clean port): an error, for a preset (a map file whose
        // optional rules name nothing here is the user's own). A dump already in the
        // reference's names keeps the warning (a script that always passes a preset).
        if map.preset && another_layout(ours, reference) {
            anyhow::bail!(
                "name map {}: none of {label}'s tensors is named by its rules, and few of its names are the reference's: is it the map of another engine's dump? (diff --suggest-map FILE proposes one)",
                map.label,
            );
        }
        warnings.push(format!(
            "name map {}: none of our tensors is named by its rules: is it the map of another engine's dump? (the probes pair by their own names)",
            map.label
        ));
    } else {
        notes.push(format!(
            "name map {}: {} of our tensors named by its rules ({computed} of them computed: split, combined or re-laid out); the rows say how (`mapped`)",
            map.label,
            made.len()
        ));
    }
    let strays: Vec<String> = made
        .iter()
        .map(|v| v.name.clone())
        .filter(|n| !reference.contains(n))
        .collect();
    let resolved_warnings = resolved.warnings.clone();
    let mapped = MappedDump::new(ours, resolved);
    // A name the reference holds under another one that the plan pairs it with (a leading
    // prefix) is compared: not a stray (a review listed them as "not in ref").
    let strays: Vec<&str> = match strays.is_empty() {
        true => Vec::new(),
        false => {
            let paired = paired_in_ours(&mapped, reference);
            strays
                .iter()
                .map(String::as_str)
                .filter(|n| !paired.contains(*n))
                .collect()
        }
    };
    if !strays.is_empty() {
        warnings.push(format!(
            "name map {}: {} names it makes are not in {}: {}",
            map.label,
            strays.len(),
            one_line(&reference.path().display().to_string()),
            list(&strays)
        ));
    }
    warnings.extend(resolved_warnings);
    check_targets(&map, &mapped, reference)?;
    Ok((mapped, warnings, notes))
}

/// The map applies to our dump (the first file). Where the names its rules make of the
/// reference's tensors are ours far more often than the names they make of ours are the
/// reference's, the two files are the wrong way round (an engine-layout check: our
/// transformers-named dump against a vLLM-layout reference under `--map vllm` compared 14 of
/// 105 rows and exited 0, the rest "only in" one file; vLLM keeps most of transformers' module
/// names, so the map named a few of ours): an error, exit 2. `ours_made`: the names the map
/// makes of ours that the reference holds. "Far more": more than twice, and more than 4. (A
/// first version counted the tensors the rules name on each side: a vLLM dump of a few probes
/// was refused against a reference whose every `mlp.act_fn` the preset names; a review.)
fn wrong_way_round(
    map: &Map,
    ours_made: usize,
    ours: &Dump,
    reference: &Dump,
    sizes: &Sizes,
) -> Result<()> {
    // The names the map makes of the reference's tensors that are ours are at most our names:
    // where twice `ours_made` reaches that (a dump in the map's layout, the usual case), the
    // map is not resolved a second time.
    if 2 * ours_made >= ours.names().len() {
        return Ok(());
    }
    let label = one_line(&reference.path().display().to_string());
    // A map that cannot be resolved against the reference (a rule it does not fit, two
    // tensors made one name) says nothing of the wrong way round; the names below still do.
    if let Ok(theirs) = divergence_map::resolve(map, &tensors_of(reference), sizes, &label) {
        let ref_made = theirs
            .tensors
            .iter()
            .filter(|v| v.rule.is_some() && ours.contains(&v.name))
            .map(|v| v.name.as_str())
            .collect::<HashSet<&str>>()
            .len();
        if ref_made > 4 && ref_made > 2 * ours_made {
            let ours = one_line(&ours.path().display().to_string());
            anyhow::bail!(
                "name map {}: applied to {label} it makes {ref_made} names that {ours} holds, applied to {ours} {ours_made} that {label} holds: the map applies to our dump, the first file; are the two files the wrong way round? (diff ENGINE_DUMP REFERENCE --map PRESET)",
                map.label
            );
        }
    }
    // The reference in the engine's layout (both files in it, most often): the map's rules
    // match tensors of the reference that are no transformers module's (vLLM's `qkv_proj.0`;
    // a rule that matches a transformers name, such as the vLLM preset's `mlp.act_fn`, does
    // not count). A bad-input hunt: two vLLM dumps under `--map vllm` compared the 22 of 136
    // names vLLM shares with transformers and exited 0, faults found later than they enter.
    // Matched by the rules' patterns, not by resolving the map, which a reference may fail
    // (a second hunt: one tensor made a name twice, and the check was passed over).
    // More of them than probes of transformers' names, and more than 4: a transformers
    // reference with a few probes of its own that a broad rule of a map file matches (a
    // Gemma's extra norms, an MoE's experts) is not refused (a review).
    let (engine_only, recognised) = engine_only_names(map, reference);
    if engine_only.len() > 4 && engine_only.len() > recognised {
        anyhow::bail!(
            "name map {}: {label} is in the map's layout: its rules rename {} of its tensors that transformers does not name so ({}); the map renames our dump, the first file, and the reference must be in transformers' names (scripts/dump_reference.py)",
            map.label,
            engine_only.len(),
            list(&engine_only)
        );
    }
    Ok(())
}

/// The reference's probes (a decode step's by its probe: `x@3` is `x`) that a rule of `map`
/// matches, renaming them to names the reference does not hold, and that no transformers
/// module is named (`divergence_names::Op::Other`), in natural order; and how many of its
/// probes are named as transformers names them. (A rule that keeps a name, changing its
/// layout only, finds the reference's own names: a second hunt's GPT-2-style
/// `transformer.h.N` reference was refused.)
fn engine_only_names<'d>(map: &Map, reference: &'d Dump) -> (Vec<&'d str>, usize) {
    let bases: HashSet<&str> = reference
        .names()
        .iter()
        .map(|n| divergence_names::split_step(n).0)
        .collect();
    let (other, known): (Vec<&str>, Vec<&str>) = bases
        .into_iter()
        .partition(|b| divergence_names::Op::of(b) == divergence_names::Op::Other);
    let mut engine: Vec<&str> = other
        .into_iter()
        .filter(|b| {
            map.rules.iter().any(|r| {
                r.from.iter().any(|p| {
                    p.matches(b).is_some_and(|caps| {
                        r.to.iter()
                            .all(|t| !reference.contains(&divergence_map::fill(t, &caps)))
                    })
                })
            })
        })
        .collect();
    engine.sort_unstable_by(|a, b| divergence_names::natural_cmp(a, b));
    (engine, known.len())
}

/// A dump's tensors as [`divergence_map::resolve`] takes them: each name with its shape (`None`
/// where its header cannot be read).
fn tensors_of(d: &Dump) -> Vec<(String, Option<Vec<usize>>)> {
    d.names()
        .iter()
        .map(|n| (n.to_string(), d.shape(n).map(<[usize]>::to_vec)))
        .collect()
}

/// Our names (as the map makes them) that the plan pairs with a reference name of another
/// spelling: a leading prefix (`layers.0.mlp` for `model.layers.0.mlp`), the one tensor of a
/// single-tensor file. The plan is made for this only where a name is not in the reference as
/// it is.
fn paired_in_ours(mapped: &MappedDump<'_>, reference: &Dump) -> HashSet<String> {
    let plain = MappedDump::plain(reference);
    let plan = divergence_diff::plan_order(
        &crate::cmd::diff::dump_names(mapped),
        &crate::cmd::diff::dump_names(&plain),
    );
    plan.renamed_in_ours
        .into_iter()
        .map(|(_, ours)| ours)
        .collect()
}

/// A `to` of the map that names no tensor of the reference is an error, as a `from` that
/// matches none of our tensors is (a typo, most likely: it was a warning, exit 0, and the rows
/// it made were "only in ours"); a preset, an `all_optional` map and an `optional` rule may
/// (`divergence_map::Resolved::targets_not_in`), and the warning above lists their names. A
/// name the reference holds under another one that the plan pairs it with (a leading prefix,
/// `layers.0.mlp` for `model.layers.0.mlp`; the one tensor of a single-tensor file) is found:
/// the plan is made for that only when a name is not in the reference as it is.
fn check_targets(map: &Map, mapped: &MappedDump<'_>, reference: &Dump) -> Result<()> {
    let Some(resolved) = mapped.resolved() else {
        return Ok(());
    };
    let mut missing = resolved.targets_not_in(map, |n| reference.contains(n));
    if missing.is_empty() {
        return Ok(());
    }
    let paired = paired_in_ours(mapped, reference);
    missing.retain(|m| !m.made.iter().any(|n| paired.contains(n.as_str())));
    // A target whose every tensor is a decode step the reference holds no tensor of (a cache
    // probe against a reference of the prefill alone) is not mistyped: the steps are what it
    // lacks, and the steps' checks say so (a review: such a map was refused, exit 2).
    if !missing.is_empty() {
        let held: HashSet<usize> = reference
            .names()
            .iter()
            .map(|n| divergence_names::split_step(n).1)
            .collect();
        missing.retain(|m| {
            m.made
                .iter()
                .any(|n| held.contains(&divergence_names::split_step(n).1))
        });
    }
    let Some(first) = missing.first() else {
        return Ok(());
    };
    let label = one_line(&reference.path().display().to_string());
    let names = reference.names().iter().map(|n| &**n);
    Err(first.error(map, names, &label).into())
}

/// The map `--map` names: a preset, else a map file (read and parsed here, beside the dumps'
/// opening: it needs neither).
pub fn from_flag(flag: &str) -> Result<Map> {
    if let Some(preset) = divergence_map::preset(flag) {
        return Ok(preset?);
    }
    let path = Path::new(flag);
    // From its metadata, before it is opened: opening a FIFO blocks until a writer comes.
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            anyhow::bail!(
                "--map {}: not a regular file ({})",
                one_line(flag),
                divergence_checkpoint::file_kind(path, &meta.file_type())
            );
        }
    }
    let text = read_map(path).with_context(|| {
        format!(
            "--map {}: not a preset ({}) and cannot be read as a map file",
            one_line(flag),
            presets()
        )
    })?;
    Ok(Map::parse_given(
        &text,
        &one_line(&path.display().to_string()),
    )?)
}

/// A warning when `--map NAME` names a preset and a file of that name is in the working
/// directory too: the preset is used (a bad-input hunt: a user's own `vllm` map was passed
/// over without a word), and `./NAME` names the file.
pub fn preset_shadows_file(flag: &str) -> Option<String> {
    let preset = divergence_map::preset_text(flag).is_some();
    // (A directory of that name, a checkout of the engine, is no map: nothing to say.)
    (preset && Path::new(flag).is_file()).then(|| {
        let name = one_line(flag);
        format!("--map {name}: the preset {name}, not the file of that name here (`--map ./{name}` reads the file)")
    })
}

/// The presets' names, for messages: `vllm, llama.cpp, transformer-lens`.
fn presets() -> String {
    let known: Vec<&str> = divergence_map::PRESETS.iter().map(|p| p.0).collect();
    known.join(", ")
}

/// The map to use: `--map`'s ([`from_flag`], given here as its result), else our metadata's
/// `"map"` (a preset name or TOML text), else none.
pub fn choose(ours: &Dump, flag: Option<Result<Map>>) -> Result<Option<Map>> {
    if let Some(map) = flag {
        return map.map(Some);
    }
    let Some(value) = recorded_map(ours) else {
        return Ok(None);
    };
    let label = format!(
        "{} (metadata \"map\")",
        one_line(&ours.path().display().to_string())
    );
    let Some(text) = value.as_str() else {
        anyhow::bail!("{label}: must be a string: a preset name or the TOML of a map");
    };
    if let Some(preset) = divergence_map::preset(text) {
        return Ok(Some(preset?));
    }
    // One word is a preset's name mistyped, not TOML (which it would fail as "key with no
    // value"): said as `--map` says it.
    if !text.trim().is_empty() && !text.contains(['=', '[', '\n']) {
        anyhow::bail!(
            "{label}: \"{}\" is not a preset ({}) nor the TOML of a map",
            one_line(&crate::cmd::parse::shortened(text)),
            presets()
        );
    }
    Ok(Some(Map::parse_given(text, &label)?))
}

/// The map a dump's metadata records (`"map"`: a preset's name or a map's TOML; `null` is
/// none).
fn recorded_map(d: &Dump) -> Option<&serde_json::Value> {
    d.meta()
        .and_then(|m| m.extra.get("map"))
        .filter(|v| !v.is_null())
}

/// [`recorded_map`] for messages: `the preset vllm`, `a map`, or `no map`.
fn map_words(value: Option<&serde_json::Value>) -> String {
    match value.map(|v| v.as_str()) {
        None => "no map".to_string(),
        Some(Some(name)) if divergence_map::preset_text(name).is_some() => {
            format!("the preset {name}")
        }
        Some(_) => "a map".to_string(),
    }
}

/// `--prefill-vs-decode` pairs two dumps of one port by their names and applies no map
/// (`--map` conflicts with it). Two dumps whose metadata record different maps (`"map"`), or a
/// map beside none, are laid out differently, and a name of one layout can mean another
/// tensor in the other (vLLM's `mlp.act_fn` is silu(gate) * up, transformers' silu(gate)):
/// the error that says so. An engine-layout check (session 46): a clean run dumped as vLLM's
/// with its map, against our one pass, read a divergence at `act_fn` without a word of the map.
pub fn unequal_shipped_maps(a: &Dump, b: &Dump) -> Option<String> {
    let (va, vb) = (recorded_map(a), recorded_map(b));
    (va != vb).then(|| {
        format!(
            "{}: its metadata records {} (\"map\"), {}'s {}: --prefill-vs-decode pairs two dumps of one port by name and applies no map, and a name of one layout can mean another tensor in another (vLLM's mlp.act_fn is silu(gate) * up); give both dumps in one layout, recording the same map or none",
            one_line(&a.path().display().to_string()),
            map_words(va),
            one_line(&b.path().display().to_string()),
            map_words(vb),
        )
    })
}

/// The reference's metadata records a map (`"map"`), which is never used: a map renames our
/// dump's tensors only, so an engine's dump given as the reference pairs by its own names (a
/// bad-input hunt: a clean vLLM dump given as REF read 20 false divergences without a word
/// about its map). `Err`, the message of an error, where ours is given no map and our names
/// are not the reference's ([`another_layout`]): the two files are the wrong way round (a
/// later hunt: with only a warning, such a clean pair still exited 1 on a shape mismatch at
/// the first RoPE table); `Ok`, a warning, where a map is used for ours, or our names are the
/// reference's (both dumps in the engine's layout: a review).
pub fn reference_map_unused(
    ours: &Dump,
    reference: &Dump,
    used: bool,
) -> Result<Option<String>, String> {
    let Some(value) = recorded_map(reference) else {
        return Ok(None);
    };
    let what = map_words(Some(value));
    let shown = one_line(&reference.path().display().to_string());
    if !used && another_layout(ours, reference) {
        return Err(format!(
            "{shown}: its metadata records {what} (\"map\"), but a map renames our dump's tensors, never the reference's, and ours is given none: are the two files the wrong way round? (diff ENGINE_DUMP REFERENCE)"
        ));
    }
    let also = if used {
        " (another is used for ours)"
    } else {
        ""
    };
    Ok(Some(format!(
        "{shown}: its metadata records {what} (\"map\"), not used: a map renames our dump's tensors, never the reference's{also}; if it is the engine's dump, give it as OURS"
    )))
}

/// True when our dump, as it is, shares few probe names with the reference, as the plan pairs
/// them (a leading prefix, decode steps the reference lacks: a review found a dump whose
/// names lacked `model.`, and a decode dump against a prefill, refused as "another engine's"):
/// the test that makes `diff` align by content ([`crate::cmd::align::few_in_common`]).
fn another_layout(ours: &Dump, reference: &Dump) -> bool {
    let (o, r) = (MappedDump::plain(ours), MappedDump::plain(reference));
    let plan = divergence_diff::plan_order(
        &crate::cmd::diff::dump_names(&o),
        &crate::cmd::diff::dump_names(&r),
    );
    crate::cmd::align::few_in_common(&plan, &o, reference)
}

/// The size fields the configs [`sizes`] consulted rejected, one line each, and the config
/// it used when one rejected none.
#[derive(Default)]
struct SizeIssues {
    rejected: Vec<String>,
    used: Option<String>,
}

/// The model sizes a map's rules may name: from `--model`'s config.json, else the config our
/// dump's metadata records (`"model"`), else the reference's (the one config parser,
/// `divergence-checkpoint`); a config that rejects one of its size fields
/// (`num_attention_heads: -4`) is passed over for the next, whole (sizes are never mixed from
/// two configs). Also, when every config rejects one, one line each, the size fields they
/// rejected, said with a map error ("needs the model size `heads`" alone would hide that our
/// dump recorded a bad one).
fn sizes(model: Option<&Path>, ours: &Dump, reference: &Dump) -> (Sizes, SizeIssues) {
    const SIZE_KEYS: [&str; 6] = [
        "hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "intermediate_size",
        "vocab_size",
    ];
    let from_dir = model.and_then(|dir| {
        let path = divergence_checkpoint::Layout::config_path(dir).ok()?;
        let cfg = divergence_checkpoint::Config::load(&path).ok()?;
        Some((cfg, one_line(&path.display().to_string())))
    });
    let from_meta = |d: &Dump| {
        let value = d.meta()?.model.clone()?;
        let cfg = divergence_checkpoint::Config::from_value(value, d.path()).ok()?;
        let label = format!(
            "{} (metadata \"model\")",
            one_line(&d.path().display().to_string())
        );
        Some((cfg, label))
    };
    let configs: Vec<(divergence_checkpoint::Config, String)> =
        [from_dir, from_meta(ours), from_meta(reference)]
            .into_iter()
            .flatten()
            .collect();
    let size_issues = |c: &divergence_checkpoint::Config| -> Vec<String> {
        c.issues
            .iter()
            .filter(|i| SIZE_KEYS.iter().any(|k| i.key.ends_with(k)))
            .map(ToString::to_string)
            .collect()
    };
    let issues: Vec<String> = configs
        .iter()
        .flat_map(|(c, label)| {
            size_issues(c)
                .into_iter()
                .map(move |i| one_line(&format!("{label}: {i}")))
        })
        .collect();
    let clean = configs.iter().find(|(c, _)| size_issues(c).is_empty());
    let Some((cfg, used)) = clean.or(configs.first()) else {
        return (Sizes::default(), SizeIssues::default());
    };
    let issues = SizeIssues {
        rejected: issues,
        used: clean.map(|_| used.clone()),
    };
    let sizes = Sizes {
        hidden: cfg.hidden_size,
        heads: cfg.num_attention_heads,
        kv_heads: cfg.num_kv_heads(cfg.family),
        head_dim: cfg.head_dim(cfg.family),
        intermediate: cfg.intermediate_size,
        vocab: cfg.vocab_size,
    };
    (sizes, issues)
}

fn one_line(s: &str) -> String {
    divergence_names::one_line(s).into_owned()
}

fn list(names: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut s = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", ... ({} more)", names.len() - SHOWN));
    }
    s
}

/// Largest map file read ([`divergence_map::MAX_MAP_BYTES`]).
const MAX_MAP_BYTES: u64 = divergence_map::MAX_MAP_BYTES as u64;

/// A map file's text, refused past [`MAX_MAP_BYTES`] (the caller refuses a FIFO or a device
/// from its metadata; this bound holds for a file that grows while it is read).
fn read_map(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_MAP_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_MAP_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_MAP_BYTES >> 20
        )));
    }
    Ok(text)
}
