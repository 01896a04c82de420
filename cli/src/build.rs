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
    let say = Progress { tty: std::io::stderr().is_terminal(), quiet: matches!(output, Output::Json) };
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
            say.push_status(&status);
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

/// What the user sees while it works, on stderr.
struct Progress {
    tty: bool,
    /// `--output json`: stdout is for the result, stderr stays quiet but for steps.
    quiet: bool,
}

impl Progress {
    fn line(&self, text: &str) {
        eprintln!("{text}");
    }

    /// Build output: every line on a terminal, the `Step n/m` lines otherwise.
    fn build_output(&self, text: &str) {
        for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            if line.starts_with("Step ") || (self.tty && !self.quiet) {
                eprintln!("  {line}");
            }
        }
    }

    /// Push status: on a terminal every layer's changes, otherwise only finished layers.
    fn push_status(&self, status: &str) {
        if (self.tty && !self.quiet) || status == "Pushed" || status == "Layer already exists" || status.contains("digest:") {
            eprintln!("  {status}");
        }
    }
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
