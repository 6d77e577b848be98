//! The images in `deploy/docker/Dockerfile`: read without a Docker engine,
//! checked for what would break a build or a restricted pod: every file
//! copied from the build context exists and is not excluded by
//! `.dockerignore`, `--from` names an earlier stage, and both targets run
//! as non-root. `scripts/images.sh` builds and runs them where Docker is.

use std::collections::BTreeSet;

use modelpub_e2e::dockerfile::{self, DockerfileError, Stage};
use modelpub_e2e::helm::repo_root;

fn read(name: &str) -> (String, Vec<Stage>) {
    let path = repo_root().join("deploy").join("docker").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stages = dockerfile::stages(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    (text, stages)
}

fn dockerignore() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join(".dockerignore"))
        .expect(".dockerignore at the repository root");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_matches('/').to_string())
        .collect()
}

const DOCKERFILE: &str = "Dockerfile";

/// Checks the Dockerfile's COPY instructions and returns its stages.
fn checked() -> Vec<Stage> {
    let name = DOCKERFILE;
    let (_, stages) = read(name);
    let ignored = dockerignore();
    let mut earlier: BTreeSet<String> = BTreeSet::new();
    for stage in &stages {
        for ins in stage
            .instructions
            .iter()
            .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
        {
            assert_eq!(
                ins.keyword, "COPY",
                "{name}:{}: use COPY, not ADD",
                ins.line
            );
            let copy = dockerfile::copy(ins).unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(from) = &copy.from {
                assert!(
                    earlier.contains(from),
                    "{name}:{}: --from={from} is not an earlier stage",
                    ins.line
                );
                continue;
            }
            for src in &copy.sources {
                assert!(
                    repo_root().join(src).exists(),
                    "{name}:{}: COPY source {src} does not exist in the repository",
                    ins.line
                );
                let top = src
                    .trim_start_matches("./")
                    .split('/')
                    .next()
                    .unwrap_or_default();
                assert!(
                    !ignored.iter().any(|pattern| pattern == top),
                    "{name}:{}: COPY source {src} is excluded by .dockerignore",
                    ins.line
                );
            }
        }
        if let Some(n) = &stage.name {
            earlier.insert(n.clone());
        }
    }
    stages
}

/// The `--target` stage an image is built from, checked to run as a
/// numeric non-root user (what the chart's runAsNonRoot can verify).
fn target(stages: &[Stage], target: &str) -> Stage {
    let stage = stages
        .iter()
        .find(|s| s.name.as_deref() == Some(target))
        .cloned()
        .unwrap_or_else(|| panic!("{DOCKERFILE}: no stage named {target}"));
    let user = stage
        .instructions
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .unwrap_or_else(|| panic!("{DOCKERFILE}: target {target} sets no USER"));
    assert!(
        !dockerfile::is_root_user(&user.args),
        "{DOCKERFILE}: target {target}'s USER {} is root",
        user.args
    );
    assert!(
        user.args
            .split(':')
            .next()
            .is_some_and(|u| u.parse::<u32>().is_ok()),
        "{DOCKERFILE}: USER {} should be numeric so runAsNonRoot can verify it",
        user.args
    );
    stage
}

fn entrypoint(stage: &Stage) -> Vec<String> {
    let ins = stage
        .instructions
        .iter()
        .rev()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("ENTRYPOINT in the target stage");
    serde_json::from_str(&ins.args).expect("ENTRYPOINT in exec (JSON) form")
}

fn builds(stages: &[Stage], needle: &str) -> bool {
    stages
        .iter()
        .flat_map(|s| &s.instructions)
        .any(|i| i.keyword == "RUN" && i.args.contains(needle))
}

#[test]
fn operator_image_builds_the_operator_into_distroless_nonroot() {
    let stages = checked();
    let operator = target(&stages, "operator");
    assert!(
        operator.base.starts_with("gcr.io/distroless/cc"),
        "runtime base: {}",
        operator.base
    );
    assert_eq!(entrypoint(&operator), ["/usr/local/bin/modelpub-operator"]);
    assert!(builds(
        &stages,
        "-p modelpub-operator --bin modelpub-operator"
    ));
}

#[test]
fn node_agent_image_links_the_wheels_libtorch_into_a_slim_nonroot_runtime() {
    let stages = checked();
    let agent = target(&stages, "node-agent");
    assert_eq!(entrypoint(&agent), ["modelpub"]);
    let (text, _) = read(DOCKERFILE);
    // Slim: the runtime starts from Debian slim, not the build stage or a
    // CUDA image (the wheels bring CUDA), and carries no Python, pip,
    // virtualenv or compiler.
    assert_eq!(agent.base, "debian:bookworm-slim");
    for ins in &agent.instructions {
        for banned in ["python", "pip", "/opt/venv", "build-essential", "rustup"] {
            assert!(
                !ins.args.contains(banned),
                "node-agent stage line {} mentions {banned}: {}",
                ins.line,
                ins.args
            );
        }
    }
    assert!(
        agent
            .instructions
            .iter()
            .any(|i| i.keyword == "COPY" && i.args.contains("/out/libtorch /opt/libtorch")),
        "the runtime copies only libtorch's libraries from the build stage"
    );
    assert!(builds(&stages, "torch==${TORCH_VERSION}") && text.contains("TORCH_VERSION=2.13.0"));
    assert!(builds(&stages, "-p modelpub-node-agent --bin modelpub"));
    assert!(text.contains("LIBTORCH_USE_PYTORCH=1"));
    let env: Vec<_> = agent
        .instructions
        .iter()
        .filter(|i| i.keyword == "ENV")
        .collect();
    assert!(
        env.iter()
            .any(|i| i.args.contains("LD_LIBRARY_PATH=") && i.args.contains("torch/lib")),
        "the runtime finds libtorch through LD_LIBRARY_PATH"
    );
}

#[test]
fn the_classic_builder_can_build_it() {
    // No engine here needs buildx: no `# syntax` directive (it would pull
    // docker/dockerfile from a registry) and no BuildKit-only RUN flags.
    let (text, _) = read(DOCKERFILE);
    assert!(
        !text.contains("# syntax="),
        "a # syntax line needs BuildKit and a registry"
    );
    assert!(!text.contains("--mount="), "RUN --mount needs BuildKit");
}

#[test]
fn the_reader_joins_continuations_and_reports_bad_files() {
    let text = "ARG A=1\n# comment\nFROM x AS build\nRUN a \\\n  && b\nCOPY --from=build [\"/o\", \"/p\"]\nFROM y\nUSER 0\n";
    let stages = dockerfile::stages(text).expect("valid");
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].name.as_deref(), Some("build"));
    assert_eq!(stages[0].instructions[0].args, "a && b");
    assert_eq!(stages[0].instructions[0].line, 4);
    let copy = dockerfile::copy(&stages[0].instructions[1]).expect("copy");
    assert_eq!(
        (
            copy.from.as_deref(),
            copy.sources,
            copy.destination.as_str()
        ),
        (Some("build"), vec!["/o".to_string()], "/p")
    );
    assert!(dockerfile::is_root_user(&stages[1].instructions[0].args));
    assert!(!dockerfile::is_root_user("65532:65532"));
    assert_eq!(
        dockerfile::stages("RUN x\n").unwrap_err(),
        DockerfileError::BeforeFrom(1)
    );
    assert_eq!(
        dockerfile::stages("ARG x\n").unwrap_err(),
        DockerfileError::NoStage
    );
    let short = dockerfile::stages("FROM x\nCOPY only\n").expect("parses");
    assert!(matches!(
        dockerfile::copy(&short[0].instructions[0]),
        Err(DockerfileError::ShortCopy { line: 2, .. })
    ));
}

#[test]
fn build_context_keeps_every_workspace_member_and_leaves_out_build_outputs() {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("[workspace] members");
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    assert!(!members.is_empty(), "no members read from {members_line}");
    let ignored = dockerignore();
    for member in members
        .iter()
        .copied()
        .chain(["Cargo.toml", "Cargo.lock", "data"])
    {
        let top = member.split('/').next().unwrap_or_default();
        assert!(
            !ignored.iter().any(|p| p == top),
            ".dockerignore excludes {member}, which the image builds need"
        );
    }
    for heavy in ["target", ".venv", ".tools", ".git"] {
        assert!(
            ignored.iter().any(|p| p == heavy),
            ".dockerignore should leave out {heavy}"
        );
    }
}
