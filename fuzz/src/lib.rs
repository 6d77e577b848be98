//! Bounded mutation fuzzing for every decoder that reads bytes from outside
//! the process: the network (envelopes, tensor chunks, SecAgg+ messages,
//! join tokens) and the disk (audit logs, vault files, data sets, weights
//! files). Each [`Target`] starts from valid inputs it builds itself and
//! feeds the decoder mutations of them; a decoder may refuse an input with
//! an error but must never panic. `cargo-fuzz` needs a nightly toolchain
//! and a libFuzzer build, neither of which CI has, so this harness runs on
//! stable, for a fixed time (`modelpub-fuzz --seconds N`) or a fixed number
//! of iterations (the tests), and saves every crashing input for a
//! regression test (`fuzz/regressions/<target>/`).
#![forbid(unsafe_code)]

pub mod mutate;
pub mod run;
pub mod targets;

/// A decoder under test.
pub trait Target: Send {
    /// The target's name, as `--target` and `fuzz/regressions/` use it.
    fn name(&self) -> &'static str;
    /// Valid inputs the mutations start from.
    fn seeds(&self) -> Vec<Vec<u8>>;
    /// Decodes `input` as the product would. `Err` is a refusal (fine);
    /// a panic is a crash.
    fn run(&mut self, input: &[u8]) -> Result<(), String>;
}
