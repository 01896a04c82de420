//! `sluice build DIR [--tag T] [--push]`: builds an image from a directory through
//! the local Docker daemon (as `docker build` does), then pushes it to its
//! registry with the `--registry-credentials` for it. `sluice deploy --build`
//! uses the same steps.
//!
//! The directory is sent as a tar archive. `.dockerignore` is read simply: each
//! line names a file or directory relative to DIR (a leading `/` and a trailing
//! `/` are allowed); wildcards and `!` exceptions are not understood and are
//! refused, so nothing meant to stay out is sent by mistake.

use crate::Output;
use anyhow::{bail, Context, Result};
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder};
use bollard::Docker;
use clap::Args;
use futures_util::StreamExt;
use serde_json::json;
use sluice_common::registry_auth::{self, RegistryCredentials};
use sluice_common::ImageRef;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where images go: the credentials of the registries pushed to.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// A file with registry=, username= and password= lines for a registry pushed to
    /// (scripts/registry.sh writes one); repeatable. The first names the default registry of --tag.
    #[arg(long = "registry-credentials", env = "SLUICE_REGISTRY_CREDENTIALS", value_delimiter = ',')]
    pub registry_credentials: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Directory with a Dockerfile and what it copies.
    pub dir: PathBuf,
    /// Image reference to build (default: <registry>/<directory name>:latest, the registry
    /// of the first --registry-credentials file, or <directory name>:latest without one).
    #[arg(long)]
    pub tag: Option<String>,
    /// Push the image to its registry after building it.
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// What a build (and push) made.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: ImageRef,
    /// Docker's image id (`sha256:...`).
    pub id: String,
    /// The manifest digest the registry gave it, when pushed.
    pub digest: Option<String>,
}

pub async fn run(output: Output, args: BuildArgs) -> Result<ExitCode> {
    let built = build(&args.dir, args.tag.as_deref(), args.push, &args.registry, output).await?;
    match output {
        Output::Json => println!("{}", json!({"image": built.image.as_str(), "id": built.id, "pushed": built.digest.is_some(), "digest": built.digest})),
        Output::Table => match &built.digest {
            Some(digest) => println!("built and pushed {} ({digest})", built.image),
            None => println!("built {} ({})", built.image, built.id),
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds `dir` as `tag` (or the default tag) and, with `push`, pushes it.
/// Progress goes to stderr: every line of the build on a terminal, the steps alone otherwise.
pub async fn build(dir: &Path, tag: Option<&str>, push: bool, registry: &RegistryArgs, output: Output) -> Result<Built> {
    let credentials = RegistryCredentials::read_all(&registry.registry_credentials).map_err(|e| anyhow::anyhow!("--registry-credentials: {e}"))?;
    anyhow::ensure!(dir.is_dir(), "{}: not a directory; give the directory that holds the Dockerfile", dir.display());
    anyhow::ensure!(dir.join("Dockerfile").is_file(), "{}: no Dockerfile in it; write one (FROM, COPY, ENTRYPOINT) or give the right directory", dir.display());
    let image = match tag {
        Some(t) => ImageRef::parse(t).map_err(|e| anyhow::anyhow!("--tag: {}", e.message))?,
        None => default_tag(dir, credentials.first())?,
    };
    let context = tar_context(dir)?;
    let docker = Docker::connect_with_local_defaults().context("cannot use the local Docker daemon; is it running, and may this user use it?")?;
    let say = Progress::new(std::io::stderr().is_terminal(), matches!(output, Output::Json));
    say.line(&format!("building {image} from {} ({} KiB of context)", dir.display(), context.len() / 1024));
    let options = BuildImageOptionsBuilder::default().t(image.as_str()).rm(true).forcerm(true).build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut id = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| anyhow::anyhow!("docker build of {image} failed: {}", docker_message(&e)))?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            bail!("docker build of {image} failed: {error}");
        }
        if let Some(text) = info.stream {
            say.build_output(&text);
        }
        if let Some(found) = info.aux.and_then(|a| a.id) {
            id = Some(found);
        }
    }
    let id = match id {
        Some(id) => id,
        None => docker
            .inspect_image(image.as_str())
            .await
            .ok()
            .and_then(|i| i.id)
            .with_context(|| format!("docker built {image} but does not show it; run `docker images` to see why"))?,
    };
    let digest = match push {
        true => Some(push_image(&docker, &image, &credentials, &say).await?),
        false => None,
    };
    Ok(Built { image, id, digest })
}

/// Pushes `image` with the credentials for its registry; returns the digest the registry gave it.
async fn push_image(docker: &Docker, image: &ImageRef, credentials: &[RegistryCredentials], say: &Progress) -> Result<String> {
    let parts = image.parts();
    let registry = parts.registry_or_default().to_string();
    let creds = registry_auth::for_registry(credentials, &registry);
    let auth =
        creds.map(|c| DockerCredentials { username: Some(c.username.clone()), password: Some(c.password.clone()), serveraddress: Some(registry.clone()), ..Default::default() });
    say.line(&format!("pushing {image} to {registry}{}", if creds.is_some() { " with credentials" } else { "" }));
    let options = PushImageOptionsBuilder::default().tag(parts.tag.unwrap_or("latest")).build();
    let mut stream = docker.push_image(&parts.name(), Some(options), auth);
    let refused = |message: &str| match (registry_auth::is_auth_failure(message), creds) {
        (true, Some(c)) => anyhow::anyhow!(
            "registry {registry} refused the credentials of user {:?} ({message}): check the username and password in the --registry-credentials file for {registry}",
            c.username
        ),
        (true, None) => anyhow::anyhow!("registry {registry} asks for credentials ({message}): give --registry-credentials FILE for {registry} (scripts/registry.sh writes one)"),
        (false, _) => anyhow::anyhow!("pushing {image} to {registry} failed: {message}; check that the registry runs (scripts/registry.sh status)"),
    };
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| refused(&docker_message(&e)))?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            return Err(refused(&error));
        }
        if let Some(status) = info.status {
            let bytes = info.progress_detail.and_then(|d| Some((d.current?, d.total?)));
            say.push_status(&status, bytes);
        }
    }
    let inspected = docker.inspect_image(image.as_str()).await.map_err(|e| anyhow::anyhow!("pushed {image}, but Docker cannot show its digest: {}", docker_message(&e)))?;
    let prefix = format!("{}@", parts.name());
    inspected
        .repo_digests
        .unwrap_or_default()
        .iter()
        .find_map(|d| d.strip_prefix(&prefix).map(str::to_string))
        .with_context(|| format!("pushed {image}, but Docker lists no digest from {registry} for it"))
}

/// `<registry>/<directory name>:latest`, the name made a valid repository.
fn default_tag(dir: &Path, credentials: Option<&RegistryCredentials>) -> Result<ImageRef> {
    let absolute = dir.canonicalize().with_context(|| format!("{}: cannot resolve the directory", dir.display()))?;
    let base = absolute.file_name().and_then(|n| n.to_str()).unwrap_or("image");
    let name: String = base.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '-' }).collect();
    let name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    anyhow::ensure!(!name.is_empty(), "{}: the directory name makes no image name; give --tag", dir.display());
    let reference = match credentials {
        Some(c) => format!("{}/{name}:latest", c.registry),
        None => format!("{name}:latest"),
    };
    ImageRef::parse(reference).map_err(|e| anyhow::anyhow!("the default tag from {}: {}; give --tag", dir.display(), e.message))
}

/// The paths `.dockerignore` keeps out, relative to the directory.
fn ignored(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(text) = std::fs::read_to_string(dir.join(".dockerignore")) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains(['*', '?', '[', '!']) {
            bail!(".dockerignore line {}: {line:?} uses wildcards or '!', which sluice build does not read; name files and directories plainly, or use docker build", n + 1);
        }
        out.push(PathBuf::from(line.trim_matches('/')));
    }
    Ok(out)
}

/// The directory as a tar archive, less what `.dockerignore` names.
fn tar_context(dir: &Path) -> Result<Vec<u8>> {
    let skip = ignored(dir)?;
    let mut archive = tar::Builder::new(Vec::new());
    archive.follow_symlinks(false);
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = std::fs::read_dir(dir.join(&relative)).with_context(|| format!("reading {}", dir.join(&relative).display()))?;
        for entry in entries {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            if skip.iter().any(|s| path.starts_with(s)) && path != Path::new("Dockerfile") {
                continue;
            }
            let full = entry.path();
            if entry.file_type()?.is_dir() {
                archive.append_dir(&path, &full).with_context(|| format!("adding {} to the build context", full.display()))?;
                pending.push(path);
            } else {
                archive.append_path_with_name(&full, &path).with_context(|| format!("adding {} to the build context", full.display()))?;
            }
        }
    }
    archive.into_inner().context("finishing the build context")
}

/// What the user sees while it works, on stderr: on a terminal, a bar redrawn
/// in place (the build's `Step n/m`, the bytes of the layer being pushed) with
/// the build's output above it; otherwise plain lines, one per step or layer.
struct Progress {
    tty: bool,
    /// `--output json`: stdout is for the result, stderr stays quiet but for steps.
    quiet: bool,
    /// A bar is on the terminal's last line, to be cleared before other output.
    bar_shown: std::cell::Cell<bool>,
}

/// Columns of the bar itself.
const BAR_WIDTH: usize = 30;

impl Progress {
    fn new(tty: bool, quiet: bool) -> Self {
        Self { tty, quiet, bar_shown: std::cell::Cell::new(false) }
    }

    fn line(&self, text: &str) {
        self.clear_bar();
        eprintln!("{text}");
    }

    /// Build output: on a terminal every line, under a bar of the steps done;
    /// otherwise the `Step n/m` lines alone.
    fn build_output(&self, text: &str) {
        for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            let step = step_of(line);
            if !self.tty || self.quiet {
                if step.is_some() {
                    eprintln!("  {line}");
                }
                continue;
            }
            self.line(&format!("  {line}"));
            if let Some((n, of)) = step {
                self.draw_bar(n.saturating_sub(1) as f64 / of.max(1) as f64, &format!("step {n} of {of}"));
            }
        }
    }

    /// Push status: on a terminal a bar of the current layer's bytes and a line per
    /// finished layer; otherwise only the finished layers' lines.
    fn push_status(&self, status: &str, bytes: Option<(i64, i64)>) {
        let finished = status == "Pushed" || status == "Layer already exists" || status.contains("digest:");
        if !self.tty || self.quiet {
            if finished {
                eprintln!("  {status}");
            }
            return;
        }
        match bytes {
            Some((current, total)) if total > 0 && !finished => {
                let mb = |b: i64| b as f64 / 1_048_576.0;
                self.draw_bar(current as f64 / total as f64, &format!("{status}: {:.1} of {:.1} MB", mb(current), mb(total)));
            }
            _ if finished => self.line(&format!("  {status}")),
            _ => {}
        }
    }

    fn draw_bar(&self, fraction: f64, label: &str) {
        eprint!("\r\x1b[2K  [{}] {label}", bar(fraction));
        self.bar_shown.set(true);
    }

    /// Leaves the terminal's last line empty again.
    fn clear_bar(&self) {
        if self.bar_shown.replace(false) {
            eprint!("\r\x1b[2K");
        }
    }
}

/// Whichever way the work ends (errors included), the bar goes first.
impl Drop for Progress {
    fn drop(&mut self) {
        self.clear_bar();
    }
}

/// `Step 3/7 : COPY ...` as (3, 7).
fn step_of(line: &str) -> Option<(u32, u32)> {
    let (n, rest) = line.strip_prefix("Step ")?.split_once('/')?;
    let of = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((n.parse().ok()?, of.parse().ok()?))
}

/// `#########.....` for a fraction done, clamped to 0..=1.
fn bar(fraction: f64) -> String {
    let done = ((fraction.clamp(0.0, 1.0) * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
    format!("{}{}", "#".repeat(done), ".".repeat(BAR_WIDTH - done))
}

fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_bars() {
        assert_eq!(step_of("Step 3/7 : COPY fn /fn"), Some((3, 7)));
        assert_eq!(step_of("Step 12/12 : ENTRYPOINT [\"/fn\"]"), Some((12, 12)));
        assert_eq!(step_of(" ---> Running in abc"), None);
        assert_eq!(step_of("Step x/7"), None);
        assert_eq!(bar(0.0), ".".repeat(BAR_WIDTH));
        assert_eq!(bar(1.5), "#".repeat(BAR_WIDTH));
        assert_eq!(bar(0.5).matches('#').count(), BAR_WIDTH / 2);
    }

    #[test]
    fn the_default_tag_comes_from_the_directory_and_the_registry() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("My App");
        std::fs::create_dir(&dir).unwrap();
        let creds = RegistryCredentials { registry: "127.0.0.1:5000".into(), username: "u".into(), password: "p".into() };
        assert_eq!(default_tag(&dir, Some(&creds)).unwrap().as_str(), "127.0.0.1:5000/my-app:latest");
        assert_eq!(default_tag(&dir, None).unwrap().as_str(), "my-app:latest");
    }

    #[test]
    fn the_context_leaves_out_what_dockerignore_names() {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in [("Dockerfile", "FROM scratch\n"), ("app", "bin"), ("secret/key", "k"), ("notes.txt", "n"), ("keep/me", "m")] {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        std::fs::write(dir.path().join(".dockerignore"), "# comment\n/secret/\nnotes.txt\n").unwrap();
        let bytes = tar_context(dir.path()).unwrap();
        let mut names: Vec<String> = tar::Archive::new(bytes.as_slice()).entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "app", "keep", "keep/me"]);
        std::fs::write(dir.path().join(".dockerignore"), "*.txt\n").unwrap();
        assert!(tar_context(dir.path()).unwrap_err().to_string().contains("wildcards"));
    }
}
