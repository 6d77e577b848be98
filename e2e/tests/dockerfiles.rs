//! The images in `deploy/docker/`: read without a Docker engine, checked
//! for what would break a build or a restricted pod: every file they copy
//! from the build context exists and is not excluded by `.dockerignore`,
//! `--from` names an earlier stage, and the final stage runs as non-root.

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

/// Checks one Dockerfile and returns the final stage.
fn check(name: &str) -> Stage {
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
    let last = stages.last().cloned().expect("at least one stage");
    let user = last
        .instructions
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .unwrap_or_else(|| panic!("{name}: the final stage sets no USER"));
    assert!(
        !dockerfile::is_root_user(&user.args),
        "{name}: final USER {} is root",
        user.args
    );
    assert!(
        user.args
            .split(':')
            .next()
            .is_some_and(|u| u.parse::<u32>().is_ok()),
        "{name}: USER {} should be numeric so runAsNonRoot can verify it",
        user.args
    );
    last
}

fn entrypoint(stage: &Stage) -> Vec<String> {
    let ins = stage
        .instructions
        .iter()
        .rev()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("ENTRYPOINT in the final stage");
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
    let last = check("operator.Dockerfile");
    assert!(
        last.base.starts_with("gcr.io/distroless/cc"),
        "runtime base: {}",
        last.base
    );
    assert_eq!(entrypoint(&last), ["/usr/local/bin/modelpub-operator"]);
    let (_, stages) = read("operator.Dockerfile");
    assert!(builds(
        &stages,
        "-p modelpub-operator --bin modelpub-operator"
    ));
}

#[test]
fn node_agent_image_links_cuda_libtorch_and_runs_nonroot() {
    let last = check("node-agent.Dockerfile");
    assert_eq!(entrypoint(&last), ["modelpub"]);
    let (text, stages) = read("node-agent.Dockerfile");
    assert!(
        text.contains("nvidia/cuda:") && text.contains("cudnn"),
        "CUDA base image"
    );
    assert!(builds(&stages, "torch==${TORCH_VERSION}") && text.contains("TORCH_VERSION=2.13.0"));
    assert!(builds(&stages, "-p modelpub-node-agent --bin modelpub"));
    assert!(text.contains("LIBTORCH_USE_PYTORCH=1"));
    let env: Vec<_> = last
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
