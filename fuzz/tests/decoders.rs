//! What CI runs of the fuzzer: every target for a fixed number of inputs
//! from a fixed seed (so a failure repeats), and every input that once
//! crashed a decoder (`fuzz/regressions/<target>/`), none of which may
//! panic again.

use modelpub_fuzz::run::{Budget, fuzz};
use modelpub_fuzz::targets;

const INPUTS_PER_TARGET: u64 = 3_000;

#[test]
fn no_decoder_panics_on_mutated_input() {
    std::panic::set_hook(Box::new(|_| {}));
    let mut report = Vec::new();
    for mut target in targets::all().unwrap() {
        let out = fuzz(target.as_mut(), Budget::Iterations(INPUTS_PER_TARGET), 1);
        assert_eq!(out.iterations, INPUTS_PER_TARGET);
        // The mutations must get past the first check sometimes, or the
        // target only exercises its framing.
        assert!(
            out.refusal_kinds >= 2 || out.accepted > 0,
            "{}: every input was refused the same way",
            target.name()
        );
        for c in &out.crashes {
            report.push(format!(
                "{}: {} (input {:02x?})",
                target.name(),
                c.message,
                &c.input[..c.input.len().min(64)]
            ));
        }
    }
    let _ = std::panic::take_hook();
    assert!(report.is_empty(), "crashes:\n{}", report.join("\n"));
}

#[test]
fn inputs_that_once_crashed_are_refused_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    for mut target in targets::all().unwrap() {
        let dir = root.join(target.name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "bin") {
                let input = std::fs::read(&path).unwrap();
                // Err or Ok are both answers; only a panic fails.
                let _ = target.run(&input);
            }
        }
    }
}
