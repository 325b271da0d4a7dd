//! Data-parallel training under `mpirun` (feature `mpi`; `.ci/run` installs Open MPI and runs
//! `cargo test --workspace --features kiln/mpi --test data_parallel`): two ranks with batch B
//! train what one process trains with batch 2B, evaluate to the same metrics, resume, and a
//! killed rank ends the job promptly with `last` intact.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use burn::prelude::*;
use burn::store::{ModuleSnapshot, bridge};
use kiln_models::LoadedModel;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
/// The project root: the configs name the shipped data relative to it.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const QUICKSTART: &str = "configs/quickstart.toml";

/// The quickstart model without stochastic depth (its draws differ between one batch of 2B and
/// two of B), on 64 images per class: 640 images, one epoch of 20 steps at global batch 32, then
/// an evaluation on 640 test images; the loss recorded every 5 steps.
const PARITY: [&str; 12] = [
    "--set",
    "data.per_class=64",
    "--set",
    "logging.interval_iters=5",
    "--set",
    "schedule.epochs=1",
    "--set",
    "schedule.warmup_epochs=0",
    "--set",
    "model.drop_path_rate=0",
    "--set",
    "logging.plots=false",
];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-dp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `kiln ARGS` on one process.
fn kiln(args: &[&str]) -> Output {
    Command::new(KILN).current_dir(ROOT).args(args).output().expect("kiln runs")
}

/// `mpirun -np RANKS kiln ARGS` over loopback, one thread per rank.
fn mpirun(ranks: usize, args: &[&str]) -> Command {
    mpirun_with(ranks, &[], args)
}

/// [`mpirun`] with more `VAR=value`s in the ranks' environment.
fn mpirun_with(ranks: usize, env: &[&str], args: &[&str]) -> Command {
    let mut command = Command::new("mpirun");
    command.current_dir(ROOT).args(["--allow-run-as-root", "--oversubscribe", "--mca", "btl_tcp_if_include", "lo", "-np", &ranks.to_string()]);
    for var in ["RAYON_NUM_THREADS=1"].iter().chain(env) {
        command.args(["-x", var]);
    }
    command.arg(KILN).args(args);
    command
}

fn succeeded(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn train_args<'a>(dir: &'a str, batch: &'a str) -> Vec<&'a str> {
    let mut args = vec!["train", QUICKSTART, "--output-dir", dir, "--set", batch];
    args.extend(PARITY);
    args
}

/// Every tensor of a Kiln checkpoint, by name.
fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let model = LoadedModel::from_native(path, &Device::flex()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    model.model.collect(None, None, true).into_iter().map(|t| (t.name.clone(), bridge::into_data(t).unwrap().try_to_vec::<f32>().unwrap())).collect()
}

/// `‖a − b‖ / ‖b‖` over all the tensors, and the tensor most different relative to its norm.
fn relative_difference(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> (f64, String) {
    assert_eq!(a.len(), b.len());
    let (mut difference, mut norm, mut worst) = (0f64, 0f64, (0f64, String::new()));
    for ((name, x), (other, y)) in a.iter().zip(b) {
        assert_eq!(name, other);
        let d: f64 = x.iter().zip(y).map(|(&p, &q)| ((p - q) as f64).powi(2)).sum();
        let n: f64 = y.iter().map(|&q| (q as f64).powi(2)).sum();
        if (d / n.max(1e-24)).sqrt() > worst.0 {
            worst = ((d / n.max(1e-24)).sqrt(), name.clone());
        }
        (difference, norm) = (difference + d, norm + n);
    }
    ((difference / norm).sqrt(), format!("{} ({:e})", worst.1, worst.0))
}

/// The records of `kind` in a run's `metrics.jsonl`.
fn records(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).filter(|r| r["kind"] == kind).collect()
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn two_ranks_train_and_evaluate_as_one_process_with_twice_the_batch() {
    let dir = scratch("parity");
    let [one, two, resumed, regrouped] = ["one", "two", "resumed", "regrouped"].map(|name| dir.join(name));
    let s = |p: &Path| p.display().to_string();
    let [one_dir, two_dir, resumed_dir, regrouped_dir] = [&one, &two, &resumed, &regrouped].map(|p| s(p));

    succeeded(&kiln(&train_args(&one_dir, "data.batch_size=32")), "one process, batch 32");
    let out = mpirun(2, &train_args(&two_dir, "data.batch_size=16")).output().unwrap();
    succeeded(&out, "two ranks, batch 16 each");
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 ranks x batch 16 = global batch 32"));

    // the weights after 20 steps
    let last = |run: &Path| run.join("checkpoints/last/model.bpk");
    // Relative to the whole model: per tensor, the key part of the qkv biases differs more, as
    // its true gradient is zero (softmax ignores a constant added to every key's score), so what
    // it gets is rounding noise, which Adam scales up to lr-sized steps of any sign
    let (difference, worst) = relative_difference(&weights(&last(&two)), &weights(&last(&one)));
    assert!(difference <= 1e-5, "two ranks' weights differ from one process's by {difference:e} relative (most at {worst})");

    // the training log reads the same: the loss is the mean over the ranks
    let (train_one, train_two) = (records(&one, "train"), records(&two, "train"));
    assert_eq!((train_one.len(), train_two.len()), (4, 4));
    for (a, b) in train_two.iter().zip(&train_one) {
        assert_eq!((&a["step"], &a["global_batch"]), (&b["step"], &serde_json::json!(32)));
        let (x, y) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!(relative(x, y) < 1e-5, "step {}: loss {x} on two ranks, {y} on one", a["step"]);
    }

    // the sharded evaluation: the same counts, and the same loss up to the weights' rounding
    let (eval_one, eval_two) = (&records(&one, "eval")[0], &records(&two, "eval")[0]);
    assert_eq!((&eval_two["top1"], &eval_two["top5"]), (&eval_one["top1"], &eval_one["top5"]));
    assert!(relative(eval_two["loss"].as_f64().unwrap(), eval_one["loss"].as_f64().unwrap()) < 1e-5);
    // ... and on the same weights, bit for bit what one process evaluates
    let eval_dir = dir.join("eval");
    let mut eval_args = vec!["eval", QUICKSTART, "--weights"];
    let weights_path = s(&last(&two));
    eval_args.extend([weights_path.as_str(), "--output-dir", eval_dir.to_str().unwrap()]);
    eval_args.extend(PARITY);
    succeeded(&kiln(&eval_args), "kiln eval");
    let alone: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(eval_dir.join("eval.json")).unwrap()).unwrap();
    for metric in ["top1", "top5", "loss"] {
        assert_eq!(alone[metric], eval_two[metric], "{metric}: one process {} against two ranks {}", alone[metric], eval_two[metric]);
    }

    // stopped after 10 steps and resumed on two ranks: bit for bit the uninterrupted run
    let mut stopped = train_args(&resumed_dir, "data.batch_size=16");
    stopped.extend(["--max-steps", "10"]);
    succeeded(&mpirun(2, &stopped).output().unwrap(), "two ranks, 10 steps");
    let mut resume = train_args(&resumed_dir, "data.batch_size=16");
    resume.push("--resume");
    succeeded(&mpirun(2, &resume).output().unwrap(), "two ranks, resumed");
    assert_eq!(weights(&last(&resumed)), weights(&last(&two)), "a resumed two-rank run differs from the uninterrupted one");

    // ... and resumed on one process with batch 16: it continues after the 320 images seen
    succeeded(&mpirun(2, &{
        let mut args = train_args(&regrouped_dir, "data.batch_size=16");
        args.extend(["--max-steps", "10"]);
        args
    })
    .output()
    .unwrap(), "two ranks, 10 steps");
    let mut alone = train_args(&regrouped_dir, "data.batch_size=16");
    alone.push("--resume");
    let out = kiln(&alone);
    succeeded(&out, "one process resuming a two-rank run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("320 examples of epoch 1 were seen; continuing at batch 20"), "{stderr}");
    let steps: Vec<u64> = records(&regrouped, "train").iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert!(steps.contains(&10) && steps.last() == Some(&30), "{steps:?}");
}

/// The pid of the process of the job marked `mark` that MPI ranks `rank`.
fn rank_pid(mark: &str, rank: usize) -> Option<u32> {
    let wanted = [format!("KILN_TEST_MARK={mark}"), format!("OMPI_COMM_WORLD_RANK={rank}")];
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        wanted.iter().all(|w| vars.contains(&w.as_bytes())).then_some(pid)
    })
}

#[test]
fn a_killed_rank_ends_the_job_and_last_survives() {
    let dir = scratch("killed");
    let run = dir.join("run");
    let mark = format!("{}", std::process::id());
    // 10 steps an epoch, a checkpoint after each, far more epochs than the test waits for
    let mut args = vec!["train", QUICKSTART, "--output-dir", run.to_str().unwrap()];
    args.extend([
        "--set",
        "data.batch_size=16",
        "--set",
        "data.per_class=32",
        "--set",
        "schedule.epochs=1000",
        "--set",
        "eval.interval_epochs=1000",
        "--set",
        "logging.plots=false",
    ]);
    let mark_var = format!("KILN_TEST_MARK={mark}");
    let mut job = mpirun_with(2, &[mark_var.as_str()], &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();

    let state = run.join("checkpoints/last/state.json");
    let waited = Instant::now();
    while !(state.exists() && std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"epoch\": 2"))) {
        assert!(waited.elapsed() < Duration::from_secs(300), "no second checkpoint after 5 minutes");
        assert!(job.try_wait().unwrap().is_none(), "the job ended before it was killed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let victim = rank_pid(&mark, 1).expect("rank 1 runs");
    Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap();
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "the job still runs 60 s after rank 1 was killed");
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = job.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!status.success(), "the job exited 0 after losing a rank");
    assert!(stderr.contains("rank 1"), "no message names rank 1:\n{stderr}");
    assert!(rank_pid(&mark, 0).is_none(), "rank 0 outlived the job");

    // `last` is whole: it loads, and a run resumes from it
    let tensors = weights(&run.join("checkpoints/last/model.bpk"));
    assert!(!tensors.is_empty());
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(state["step"].as_u64().unwrap() >= 20, "{state}");
}
