//! A light Dockerfile reader for the image suites: instructions (with `\`
//! continuations joined), stages, and what each COPY takes from the build
//! context. No Docker engine is needed to check that the files reference
//! paths that exist and end as a non-root user.

/// One instruction: its keyword (upper case), the rest of the line, and the
/// line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    pub keyword: String,
    pub args: String,
}

/// A build stage: `FROM base [AS name]` and the instructions after it.
#[derive(Debug, Clone)]
pub struct Stage {
    pub base: String,
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

/// Why a Dockerfile cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DockerfileError {
    #[error("line {0}: instruction before the first FROM (only ARG may come first)")]
    BeforeFrom(usize),
    #[error("line {0}: FROM without an image")]
    EmptyFrom(usize),
    #[error("line {line}: COPY/ADD needs a source and a destination: {args}")]
    ShortCopy { line: usize, args: String },
    #[error("line {line}: COPY/ADD JSON form is not a list of strings: {args}")]
    BadJsonCopy { line: usize, args: String },
    #[error("no FROM: not a Dockerfile")]
    NoStage,
}

/// Splits a Dockerfile into instructions, skipping comments and blank lines.
pub fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_none()) {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(body) => (body.trim_end(), true),
            None => (trimmed, false),
        };
        if !joined.is_empty() && !body.is_empty() {
            joined.push(' ');
        }
        joined.push_str(body);
        if continues {
            pending = Some((start, joined));
        } else if !joined.is_empty() {
            let (keyword, args) = joined
                .split_once(char::is_whitespace)
                .unwrap_or((&joined, ""));
            out.push(Instruction {
                line: start,
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_string(),
            });
        }
    }
    out
}

/// Groups instructions into stages.
pub fn stages(text: &str) -> Result<Vec<Stage>, DockerfileError> {
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions(text) {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let base = words.first().ok_or(DockerfileError::EmptyFrom(ins.line))?;
            let name = match words.as_slice() {
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                base: base.to_string(),
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(ins);
        } else if ins.keyword != "ARG" {
            return Err(DockerfileError::BeforeFrom(ins.line));
        }
    }
    if stages.is_empty() {
        return Err(DockerfileError::NoStage);
    }
    Ok(stages)
}

/// A COPY or ADD: its `--from` stage (if any), sources and destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub from: Option<String>,
    pub sources: Vec<String>,
    pub destination: String,
}

/// Reads the arguments of a COPY/ADD instruction.
pub fn copy(ins: &Instruction) -> Result<Copy, DockerfileError> {
    let mut from = None;
    let mut rest = ins.args.as_str();
    while let Some(flag_and_rest) = rest.strip_prefix("--") {
        let (flag, after) = flag_and_rest
            .split_once(char::is_whitespace)
            .unwrap_or((flag_and_rest, ""));
        if let Some(stage) = flag.strip_prefix("from=") {
            from = Some(stage.to_string());
        }
        rest = after.trim_start();
    }
    let mut paths: Vec<String> = if rest.starts_with('[') {
        serde_json::from_str(rest).map_err(|_| DockerfileError::BadJsonCopy {
            line: ins.line,
            args: ins.args.clone(),
        })?
    } else {
        rest.split_whitespace().map(str::to_string).collect()
    };
    if paths.len() < 2 {
        return Err(DockerfileError::ShortCopy {
            line: ins.line,
            args: ins.args.clone(),
        });
    }
    let destination = paths.pop().unwrap_or_default();
    Ok(Copy {
        from,
        sources: paths,
        destination,
    })
}

/// The user part of a `USER user[:group]` instruction, and whether it is
/// root (uid 0 or the name `root`).
pub fn is_root_user(args: &str) -> bool {
    let user = args.split(':').next().unwrap_or("").trim();
    user.is_empty() || user == "0" || user == "root"
}
