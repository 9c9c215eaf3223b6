//! Measures what version history costs for a session with 100,000 edits: two editors edit a
//! 30-node graph (moves, param changes, nodes added and removed), an automatic version is kept
//! every 1,000 edits, and the sizes are printed: the document, the update log before
//! compaction, each version's state and all of them. Each edit is sent to the other editor as
//! the update its own transaction produced (what a client sends), not as a diff against the
//! other's state vector: computing such a diff walks the whole document, which made 100,000
//! edits quadratic. Run: `cargo run --release --example version_storage [edits] [edits_per_version]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use sha2::{Digest, Sha256};
use yrs::updates::decoder::Decode;
use yrs::{Any, Doc, Map, MapPrelim, Out, ReadTxn, StateVector, Transact, Update};

const NODES: usize = 30;

fn node(i: usize) -> MapPrelim {
    MapPrelim::from([
        ("type".to_owned(), yrs::In::Any(Any::from("blur"))),
        ("x".to_owned(), yrs::In::Any(Any::from(i as f64 * 10.0))),
        ("y".to_owned(), yrs::In::Any(Any::from(0.0))),
        (
            "params".to_owned(),
            yrs::In::Map(MapPrelim::from([
                ("radius".to_owned(), yrs::In::Any(Any::from(2.0))),
                ("seed".to_owned(), yrs::In::Any(Any::from(7.0))),
            ])),
        ),
    ])
}

/// The `n`-th command-line argument as a positive count, or `default`; a bad one ends the
/// program with a usage line rather than a panic.
fn count_arg(args: &[String], n: usize, name: &str, default: usize) -> usize {
    match args.get(n) {
        None => default,
        Some(a) => match a.parse::<usize>() {
            Ok(v) if v > 0 => v,
            _ => {
                eprintln!("usage: version_storage [EDITS] [EDITS_PER_VERSION]: {name} must be a positive whole number, got {a:?}");
                std::process::exit(2);
            }
        },
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let edits = count_arg(&args, 0, "EDITS", 100_000);
    let per_version = count_arg(&args, 1, "EDITS_PER_VERSION", 1_000);
    let editors = [Doc::with_client_id(1), Doc::with_client_id(2)];
    let mut log_bytes = 0usize;
    let sync = |from: &Doc, to: &Doc, log: &mut usize| {
        let update = from
            .transact()
            .encode_state_as_update_v1(&to.transact().state_vector());
        *log += update.len();
        to.transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
    };
    {
        let doc = &editors[0];
        let nodes = doc.get_or_insert_map("nodes");
        let mut txn = doc.transact_mut();
        for i in 0..NODES {
            nodes.insert(&mut txn, format!("n{i}"), node(i));
        }
    }
    sync(&editors[0], &editors[1], &mut log_bytes);
    let mut versions = Vec::new();
    let mut seen = HashSet::new();
    let mut distinct_bytes = 0usize;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut extra = 0usize;
    for edit in 0..edits {
        let (me, other) = if edit % 2 == 0 { (0, 1) } else { (1, 0) };
        let doc = &editors[me];
        let nodes = doc.get_or_insert_map("nodes");
        let roll = next() % 100;
        let target = format!("n{}", next() as usize % NODES);
        let update = {
            let mut txn = doc.transact_mut();
            match (roll, nodes.get(&txn, &target)) {
                // A drag step: x and y.
                (0..60, Some(Out::YMap(n))) => {
                    n.insert(&mut txn, "x", (next() % 2000) as f64);
                    n.insert(&mut txn, "y", (next() % 2000) as f64);
                }
                // A param change.
                (60..90, Some(Out::YMap(n))) => {
                    if let Some(Out::YMap(p)) = n.get(&txn, "params") {
                        p.insert(&mut txn, "radius", (next() % 64) as f64);
                    }
                }
                // A node added, or an extra one removed.
                _ => {
                    if extra > 0 && next() % 2 == 0 {
                        nodes.remove(&mut txn, &format!("x{}", extra - 1));
                        extra -= 1;
                    } else {
                        nodes.insert(&mut txn, format!("x{extra}"), node(extra));
                        extra += 1;
                    }
                }
            }
            txn.encode_update_v1()
        };
        log_bytes += update.len();
        editors[other]
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        if (edit + 1) % per_version == 0 {
            let state = editors[0]
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            if seen.insert(Sha256::digest(&state)) {
                distinct_bytes += state.len();
            }
            versions.push(state.len());
        }
    }
    let state = editors[0]
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let (min, max) = (
        versions.iter().min().copied().unwrap_or(0),
        versions.iter().max().copied().unwrap_or(0),
    );
    println!(
        "edits: {edits} (two editors), nodes at the end: {}",
        NODES + extra
    );
    println!("document state at the end: {} bytes", state.len());
    println!("update log before compaction: {log_bytes} bytes");
    println!(
        "automatic versions (one per {per_version} edits): {}, each {min}..{max} bytes, {distinct_bytes} bytes in all",
        versions.len()
    );
}
