//! `strata-bench corpus`: the benchmarks' real sentences (comment lines of Python's standard
//! library, 5-40 words, deduplicated), and reading them back.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::json;

pub(crate) fn corpus(from: &Path, out: &Path, max: usize) -> anyhow::Result<serde_json::Value> {
    let mut files = Vec::new();
    walk(from, &mut files)?;
    files.sort();
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    'outer: for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines() {
            let t = line.trim_start();
            let Some(c) = t.strip_prefix('#') else {
                continue;
            };
            let c = c.trim_start_matches('#').trim();
            let words = c.split_whitespace().count();
            if (5..=40).contains(&words)
                && c.chars().all(|ch| !ch.is_control())
                && seen.insert(c.to_owned())
            {
                lines.push(c.to_owned());
                if lines.len() >= max {
                    break 'outer;
                }
            }
        }
    }
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    for l in &lines {
        writeln!(w, "{l}")?;
    }
    w.flush()?;
    Ok(json!({"sentences": lines.len(), "files": files.len()}))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "py") {
            out.push(p);
        }
    }
    Ok(())
}

pub(crate) fn read_lines(path: &Path, skip: usize, n: usize) -> anyhow::Result<Vec<String>> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(f)
        .lines()
        .skip(skip)
        .take(n)
        .collect::<Result<_, _>>()?;
    if lines.len() < n {
        bail!(
            "{} has only {} sentences after {skip}, {n} wanted",
            path.display(),
            lines.len()
        );
    }
    Ok(lines)
}
