//! The real `lem serve` process for a benchmark: its binary beside this example's
//! (`target/release/lem`), a fresh data dir, join tokens, sweep submission, kill -9.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any wait for the server may take before the benchmark gives up.
pub const WAIT: Duration = Duration::from_secs(120);

/// `target/<profile>/lem`, beside `target/<profile>/examples/serve_bench`.
pub fn lem_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("lem"))
        .ok_or_else(|| anyhow::anyhow!("no directory above {}", exe.display()))?;
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release --bin lem)",
        bin.display()
    );
    Ok(bin)
}

pub fn lem(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for var in [
        "LEM_DATA_DIR",
        "LEM_COORDINATOR",
        "LEM_CREDENTIAL",
        "LEM_LISTEN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `count` single-use join tokens, made before the server holds the store.
pub fn join_tokens(bin: &Path, data_dir: &Path, count: usize) -> anyhow::Result<Vec<String>> {
    (0..count)
        .map(|_| {
            let out = lem(bin)
                .args(["token", "create", "--ttl", "1h", "--data-dir"])
                .arg(data_dir)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "lem token create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(String::from_utf8(out.stdout)?.trim().to_owned())
        })
        .collect()
}

pub struct Server {
    pub addr: String,
    child: Child,
}

impl Server {
    /// Starts `lem serve` on 127.0.0.1:0 and returns once it wrote its address.
    pub fn start(bin: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let addr_file = data_dir.join("serve.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("serve.log"))?;
        let child = lem(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("LEM_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                if text.ends_with('\n') {
                    return Ok(Self {
                        addr: text.trim().to_owned(),
                        child,
                    });
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "lem serve wrote no address");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `lem --coordinator ADDR sweep submit` of `configs` with `cycles`.
    pub fn submit(
        &self,
        bin: &Path,
        data_dir: &Path,
        configs: &[PathBuf],
        cycles: u32,
    ) -> anyhow::Result<()> {
        let out = lem(bin)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--coordinator", &self.addr, "sweep", "submit"])
            .args(configs)
            .args(["--cycles", &cycles.to_string()])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "sweep submit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    pub fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?; // SIGKILL on Unix
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `count` small configs (synthetic prompts) in `dir`: `count × cycles` jobs.
pub fn write_configs(dir: &Path, count: usize) -> anyhow::Result<Vec<PathBuf>> {
    (0..count)
        .map(|i| {
            let path = dir.join(format!("exp-{i}.yaml"));
            std::fs::write(
                &path,
                format!(
                    "config_name: exp-{i}\nmodel_name: test/model-{i}\nmax_input_tokens: 16\n\
                     max_output_tokens: 4\nnum_input_prompts: 2\nnum_cycles: 1\n\
                     batching_options:\n  batch_size: 1\nprompt_source:\n  type: synthetic\n  input_tokens: 8\n"
                ),
            )?;
            Ok(path)
        })
        .collect()
}
