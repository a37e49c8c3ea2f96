//! `results.csv`: one row per cell, stable column order, units in the names. Column names that
//! mean what llama-bench's mean use llama-bench's. Failed cells are rows with `status=failed`
//! and `error`; metric columns are empty where a value does not exist. Every value goes through
//! [`crate::redact::spreadsheet_safe`]: text a spreadsheet would run as a formula gets a leading
//! `'`, numbers stay numbers.

use anyhow::Result;

use super::Format;
use crate::results::{CellResult, CellStatus, Report};

pub struct Csv;

type Col = (&'static str, fn(&Report, &CellResult) -> String);

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn num(v: Option<f64>) -> String {
    // Enough digits for spreadsheets, no float noise.
    v.map(|x| format!("{}", (x * 1e6).round() / 1e6))
        .unwrap_or_default()
}

macro_rules! stat_cols {
    ($m:literal) => {
        [
            (
                $m,
                (|_, c| num(c.metrics.get($m).map(|s| s.mean)))
                    as fn(&Report, &CellResult) -> String,
            ),
            (concat!($m, "_sd"), |_, c| {
                num(c.metrics.get($m).map(|s| s.sd))
            }),
            (concat!($m, "_median"), |_, c| {
                num(c.metrics.get($m).map(|s| s.median))
            }),
            (concat!($m, "_min"), |_, c| {
                num(c.metrics.get($m).map(|s| s.min))
            }),
            (concat!($m, "_max"), |_, c| {
                num(c.metrics.get($m).map(|s| s.max))
            }),
        ]
    };
}

/// Every column, in order.
pub fn columns() -> Vec<Col> {
    let mut cols = identity_columns();
    cols.extend(parameter_columns());
    cols.extend(stat_cols!("ttft_ms"));
    cols.extend(stat_cols!("decode_tok_s"));
    cols.extend::<[Col; 3]>([
        ("itl_ms_p50", |_, c| num(c.itl_ms_p50)),
        ("itl_ms_p90", |_, c| num(c.itl_ms_p90)),
        ("itl_ms_p99", |_, c| num(c.itl_ms_p99)),
    ]);
    cols.extend(stat_cols!("pp_tok_s"));
    cols.extend(stat_cols!("tg_tok_s"));
    cols.extend(counter_columns());
    cols.extend(memory_columns());
    cols.extend(build_columns());
    cols.extend(placement_columns());
    cols.extend(quality_columns());
    cols.extend(load_columns());
    // added after the load columns: the machine that measured the cell (`merge` joins cells
    // of several)
    cols.push(("host", |_, c| c.host.clone()));
    cols.extend(rpc_columns());
    cols.extend(serving_columns());
    cols.extend(device_columns());
    cols.extend(disturbance_columns());
    cols
}

/// The devices a cell was allowed (`devices`, added after the serving columns; empty =
/// llama.cpp's own choice) and the drivers of those holding its weights where the backend
/// names one (Vulkan).
fn device_columns() -> Vec<Col> {
    vec![
        ("devices", |_, c| c.params.devices.0.join(",")),
        ("driver", |r, c| {
            let mut drivers: Vec<&str> = c
                .devices_used
                .iter()
                .filter_map(|n| r.environment.llama.devices.iter().find(|d| &d.name == n))
                .map(|d| d.driver.as_str())
                .filter(|d| !d.is_empty())
                .collect();
            drivers.dedup();
            drivers.join("+")
        }),
    ]
}

/// What else used the machine during the cell's timed regions (added after the device
/// columns): empty for cells from before it was measured.
fn disturbance_columns() -> Vec<Col> {
    fn d(c: &CellResult) -> Option<&crate::disturbance::Disturbance> {
        c.disturbance.as_ref()
    }
    vec![
        ("other_cpu_pct", |_, c| num(d(c).map(|d| d.other_cpu_pct))),
        ("steal_pct", |_, c| num(d(c).map(|d| d.steal_pct))),
        ("gpu_other_processes", |_, c| {
            opt(d(c).and_then(|d| d.gpu_other_processes))
        }),
        ("disturbed", |_, c| {
            opt(d(c).and_then(|d| d.disturbed.clone()))
        }),
    ]
}

/// A served cell's reported point (added after the RPC columns; vLLM `bench serve`'s
/// definitions, docs/metrics.md): empty for in-process cells.
fn serving_columns() -> Vec<Col> {
    fn sv(c: &CellResult) -> Option<&crate::protocol::ServingMeasurement> {
        c.serving.as_ref()
    }
    fn pt(c: &CellResult) -> Option<&crate::serving_stats::PointSummary> {
        c.serving.as_ref().map(|s| &s.summary)
    }
    macro_rules! pcts {
        ($f:ident, $($n:literal => $w:ident),*) => {
            [$((concat!(stringify!($f), "_", $n), (|_, c| num(pt(c).and_then(|p| p.$f.as_ref()).map(|x| x.$w))) as fn(&Report, &CellResult) -> String)),*]
        };
    }
    let mut cols: Vec<Col> = vec![
        ("serve", |_, c| {
            opt(c.params.serve.as_ref().map(|s| s.tag()))
        }),
        ("serve_target", |_, c| opt(sv(c).map(|s| s.target.clone()))),
        ("server_version", |_, c| {
            opt(sv(c).and_then(|s| s.server_version.clone()))
        }),
        ("server_pinned", |_, c| {
            opt(sv(c).and_then(|s| s.server_pinned))
        }),
        ("workload", |_, c| opt(sv(c).map(|s| s.workload.clone()))),
        ("offered_rate_req_s", |_, c| {
            num(pt(c).and_then(|p| p.offered_rate_req_s))
        }),
        ("concurrency", |_, c| opt(pt(c).and_then(|p| p.concurrency))),
        ("requests", |_, c| opt(pt(c).map(|p| p.requests))),
        ("completed_requests", |_, c| opt(pt(c).map(|p| p.completed))),
        ("failed_requests", |_, c| {
            opt(pt(c).map(|p| p.failed_requests))
        }),
        ("timed_out_requests", |_, c| {
            opt(pt(c).map(|p| p.timed_out_requests))
        }),
        ("duration_s", |_, c| num(pt(c).map(|p| p.duration_s))),
        ("req_per_s", |_, c| num(pt(c).map(|p| p.req_per_s))),
        ("output_tok_s", |_, c| num(pt(c).map(|p| p.output_tok_s))),
        ("total_tok_s", |_, c| num(pt(c).map(|p| p.total_tok_s))),
    ];
    cols.extend(
        pcts!(ttft_ms, "mean" => mean, "p50" => p50, "p90" => p90, "p95" => p95, "p99" => p99),
    );
    cols.extend(
        pcts!(tpot_ms, "mean" => mean, "p50" => p50, "p90" => p90, "p95" => p95, "p99" => p99),
    );
    // itl_ms_p50/p90/p99 are the columns above (the in-process ITL): the two missing here
    cols.extend(pcts!(itl_ms, "mean" => mean, "p95" => p95));
    cols.extend(
        pcts!(e2e_ms, "mean" => mean, "p50" => p50, "p90" => p90, "p95" => p95, "p99" => p99),
    );
    cols.extend::<[Col; 11]>([
        ("goodput_req_s", |_, c| {
            num(pt(c).and_then(|p| p.goodput_req_s))
        }),
        ("goodput_frac", |_, c| {
            num(pt(c).and_then(|p| p.goodput_frac))
        }),
        ("slo_met", |_, c| opt(pt(c).and_then(|p| p.slo_met))),
        ("max_rate_req_s", |_, c| {
            num(sv(c).and_then(|s| s.max_rate_req_s))
        }),
        ("server_prompt_ms_mean", |_, c| {
            num(pt(c).and_then(|p| p.server_prompt_ms_mean))
        }),
        ("server_decode_ms_mean", |_, c| {
            num(pt(c).and_then(|p| p.server_decode_ms_mean))
        }),
        ("overhead_ms_mean", |_, c| {
            num(pt(c).and_then(|p| p.overhead_ms_mean))
        }),
        ("server_rss_peak_bytes", |_, c| {
            opt(sv(c).and_then(|s| s.server_rss_peak_bytes))
        }),
        ("energy_j_per_request", |_, c| {
            num(sv(c).and_then(|s| s.energy_j_per_request))
        }),
        ("slot_ctx", |_, c| opt(sv(c).map(|s| s.slot_ctx))),
        ("server_command", |_, c| {
            opt(sv(c).and_then(|s| s.command.clone()))
        }),
    ]);
    cols
}

/// llama.cpp RPC servers (added after `host`): the servers of the cell (`,`-separated), the
/// weights they held and the bytes the load sent them (summed over the servers).
fn rpc_columns() -> Vec<Col> {
    vec![
        ("rpc", |_, c| c.params.rpc.0.join(",")),
        ("rpc_weights_bytes", |_, c| sum_rpc(c, |u| u.weights_bytes)),
        ("rpc_load_sent_bytes", |_, c| {
            sum_rpc(c, |u| u.load_sent_bytes)
        }),
    ]
}

fn sum_rpc(c: &CellResult, f: fn(&crate::protocol::RpcUse) -> u64) -> String {
    if c.rpc.is_empty() {
        String::new()
    } else {
        c.rpc.iter().map(f).sum::<u64>().to_string()
    }
}

/// Several sequences and depth (added after the quality columns): the parameters, the
/// aggregate throughputs (llama-batched-bench's S_TG and S_PP) and the price per token.
fn load_columns() -> Vec<Col> {
    let mut cols: Vec<Col> = vec![
        ("n_parallel", |_, c| c.params.n_parallel.to_string()),
        ("n_depth", |_, c| c.params.n_depth.to_string()),
        ("shared_prompt", |_, c| c.params.shared_prompt.to_string()),
    ];
    cols.extend(stat_cols!("throughput_tok_s"));
    cols.extend(stat_cols!("pp_throughput_tok_s"));
    cols.extend::<[Col; 2]>([
        ("throughput_tok_s_llama", |_, c| {
            num(c.mean("throughput_tok_s_llama"))
        }),
        ("usd_per_mtok", |_, c| num(c.usd_per_mtok)),
    ]);
    cols
}

/// Quality against the reference (added after the placement columns): empty without the test.
/// Full precision: a KL divergence of 1e-5 would round to nothing at six decimals.
fn quality_columns() -> Vec<Col> {
    macro_rules! q {
        ($f:ident) => {
            (stringify!($f), |_, c| {
                opt(c
                    .quality
                    .as_ref()
                    .and_then(|q| q.stats.as_ref())
                    .map(|s| s.$f))
            })
        };
    }
    vec![
        q!(ppl),
        q!(ppl_ratio),
        q!(ppl_ratio_err),
        q!(kld_mean),
        q!(kld_mean_err),
        q!(kld_median),
        q!(kld_p99),
        q!(kld_max),
        q!(top1_agree),
        q!(top1_agree_err),
        q!(dp_rms),
        ("quality_tokens", |_, c| {
            opt(c
                .quality
                .as_ref()
                .and_then(|q| q.stats.as_ref())
                .map(|s| s.tokens))
        }),
        ("quality_ref", |_, c| {
            c.quality
                .as_ref()
                .map(|q| q.quality_ref.clone())
                .unwrap_or_default()
        }),
        ("quality_corpus", |_, c| {
            c.quality
                .as_ref()
                .map(|q| q.quality_corpus.clone())
                .unwrap_or_default()
        }),
        ("quality_error", |_, c| {
            c.quality
                .as_ref()
                .and_then(|q| q.quality_error.clone())
                .unwrap_or_default()
        }),
        ("quality_s", |_, c| {
            opt(c.quality.as_ref().and_then(|q| q.quality_s))
        }),
    ]
}

/// The run and the cell: names, status, the model file and what llama.cpp says of the model.
fn identity_columns() -> Vec<Col> {
    vec![
        ("run_id", |r, _| r.run_id.clone()),
        ("index", |_, c| c.index.to_string()),
        ("model", |_, c| c.model.clone()),
        ("label", |_, c| c.label.clone()),
        ("quant", |_, c| c.quant.to_string()),
        ("status", |_, c| match c.status {
            CellStatus::Ok => "ok".into(),
            CellStatus::Failed => "failed".into(),
        }),
        ("error", |_, c| c.error.clone().unwrap_or_default()),
        ("source", |_, c| {
            opt(c.origin.as_ref().map(|o| o.kind.clone()))
        }),
        ("synthetic", |_, c| {
            opt(c.origin.as_ref().map(|o| o.synthetic))
        }),
        ("file", |_, c| {
            opt(c.origin.as_ref().map(|o| o.path.display().to_string()))
        }),
        ("file_sha256", |_, c| {
            opt(c.origin.as_ref().map(|o| o.sha256.clone()))
        }),
        ("hf_repo", |_, c| {
            opt(c.origin.as_ref().and_then(|o| o.repo.clone()))
        }),
        ("hf_commit", |_, c| {
            opt(c.origin.as_ref().and_then(|o| o.commit.clone()))
        }),
        ("model_type", |_, c| {
            opt(c.model_info.as_ref().map(|m| m.desc.clone()))
        }),
        ("model_size", |_, c| {
            opt(c.model_info.as_ref().map(|m| m.size_bytes))
        }),
        ("model_n_params", |_, c| {
            opt(c.model_info.as_ref().map(|m| m.n_params))
        }),
    ]
}

/// The cell's parameters, where it ran, and its load and context times.
fn parameter_columns() -> Vec<Col> {
    vec![
        ("n_prompt", |_, c| c.params.n_prompt.to_string()),
        ("n_gen", |_, c| c.params.n_gen.to_string()),
        ("n_batch", |_, c| c.params.n_batch.to_string()),
        ("n_ubatch", |_, c| c.params.n_ubatch.to_string()),
        ("n_ctx", |_, c| opt(c.n_ctx)),
        ("n_gpu_layers", |_, c| c.params.n_gpu_layers.to_string()),
        ("flash_attn", |_, c| c.params.flash_attn.name().into()),
        ("type_k", |_, c| c.params.type_k.clone()),
        ("type_v", |_, c| c.params.type_v.clone()),
        ("n_threads", |_, c| c.params.n_threads.to_string()),
        ("repetitions", |_, c| c.params.repetitions.to_string()),
        ("warmup", |_, c| c.params.warmup.to_string()),
        ("sampling", |_, c| c.params.sampling.name().into()),
        ("backend", |_, c| opt(c.backend.clone())),
        ("device", |_, c| opt(c.device.clone())),
        ("load_s", |_, c| num(c.load_s)),
        ("load_cold", |_, c| opt(c.load_cold)),
        ("ctx_s", |_, c| num(c.ctx_s)),
    ]
}

/// llama.cpp's own counters and the sampling cost (means).
fn counter_columns() -> Vec<Col> {
    vec![
        ("pp_tok_s_llama", |_, c| num(c.mean("pp_tok_s_llama"))),
        ("tg_tok_s_llama", |_, c| num(c.mean("tg_tok_s_llama"))),
        ("sample_us", |_, c| num(c.mean("sample_us"))),
    ]
}

/// Memory (VRAM, llama.cpp's breakdown, host RSS), efficiency, energy, bandwidth and clocks.
fn memory_columns() -> Vec<Col> {
    vec![
        ("vram_bytes", |_, c| opt(c.vram_bytes)),
        ("vram_source", |_, c| opt(c.vram_source.clone())),
        ("vram_after_load_bytes", |_, c| {
            opt(c.gpu.as_ref().and_then(|g| g.vram_after_load_bytes))
        }),
        ("vram_peak_bytes", |_, c| {
            opt(c.gpu.as_ref().and_then(|g| g.vram_peak_bytes))
        }),
        ("weights_gpu_bytes", |_, c| {
            opt(c.memory.as_ref().map(|m| m.weights_gpu_bytes))
        }),
        ("weights_host_bytes", |_, c| {
            opt(c.memory.as_ref().map(|m| m.weights_host_bytes))
        }),
        ("kv_bytes", |_, c| {
            opt(c.memory.as_ref().map(|m| m.kv_bytes))
        }),
        ("compute_bytes", |_, c| {
            opt(c.memory.as_ref().map(|m| m.compute_bytes))
        }),
        ("host_rss_bytes", |_, c| {
            opt(c.memory.as_ref().map(|m| m.host_rss_after_warmup_bytes))
        }),
        ("mem_basis", |_, c| opt(c.mem_basis.clone())),
        ("mem_bytes", |_, c| opt(c.mem_bytes)),
        ("efficiency_tok_s_per_gb", |_, c| {
            num(c.efficiency_tok_s_per_gb)
        }),
        ("energy_j_per_tok", |_, c| num(c.energy_j_per_tok)),
        ("bw_util", |_, c| num(c.bw_util)),
        ("throttled", |_, c| opt(c.throttled)),
        ("sm_clock_mhz_min", |_, c| {
            opt(c.gpu.as_ref().and_then(|g| g.sm_clock_mhz_min))
        }),
        ("sm_clock_mhz_max", |_, c| {
            opt(c.gpu.as_ref().and_then(|g| g.sm_clock_mhz_max))
        }),
    ]
}

/// The quantbench and llama.cpp builds, and when the run started.
fn build_columns() -> Vec<Col> {
    vec![
        ("quantbench_version", |r, _| r.quantbench.version.clone()),
        ("git_commit", |r, _| r.quantbench.git_commit.clone()),
        ("build_profile", |r, _| r.quantbench.build_profile.clone()),
        ("llama_version", |r, _| {
            r.environment.llama.llama_version.clone()
        }),
        ("started_at", |r, _| r.started_at.clone()),
    ]
}

/// The multi-GPU placement (added after the columns above; llama-bench's names) and the GPUs
/// used.
fn placement_columns() -> Vec<Col> {
    vec![
        ("split_mode", |_, c| c.params.split_mode.name().into()),
        ("main_gpu", |_, c| c.params.main_gpu.to_string()),
        ("tensor_split", |_, c| c.params.tensor_split.to_string()),
        ("n_gpus", |_, c| {
            if c.status == CellStatus::Ok {
                c.devices_used.len().to_string()
            } else {
                String::new()
            }
        }),
        ("gpus", |_, c| c.devices_used.join("/")),
        ("vram_per_gpu_bytes", |_, c| {
            c.vram_per_gpu()
                .iter()
                .map(|v| opt(*v))
                .collect::<Vec<_>>()
                .join("/")
        }),
        ("vram_max_gpu_bytes", |_, c| opt(c.vram_max_gpu_bytes())),
    ]
}

impl Format for Csv {
    fn file_name(&self) -> &'static str {
        "results.csv"
    }
    fn render(&self, report: &Report) -> Result<String> {
        let cols = columns();
        let mut w = ::csv::Writer::from_writer(Vec::new());
        w.write_record(cols.iter().map(|(n, _)| *n))?;
        for c in &report.cells {
            w.write_record(
                cols.iter()
                    .map(|(_, f)| crate::redact::spreadsheet_safe(&f(report, c)).into_owned()),
            )?;
        }
        Ok(String::from_utf8(w.into_inner()?)?)
    }
}
