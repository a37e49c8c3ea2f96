//! Scoring a model against its reference on a corpus, the way `llama-perplexity
//! --kl-divergence` does: chunks of `n_ctx` tokens, each decoded from an empty cache with BOS
//! first, the logits of the second half of each chunk compared position by position. The
//! reference and the quant run side by side, one chunk at a time: the reference's
//! log-probabilities of one chunk are held in memory (`n_ctx/2 × n_vocab` doubles, 100 MB for
//! GPT-2's vocabulary at `n_ctx` 512), nothing is written to disk. The statistics are the
//! `quality` leaf's.

use std::ptr::NonNull;

use anyhow::{bail, Context as _, Result};
use llama_cpp_sys_2 as sys;
use rand::{RngExt, SeedableRng};

use super::bench::{LoadedModel, Probe};
use crate::plan::CellParams;
use crate::quality::{self, QualityAccumulator, QualityStats};

/// The text the models are scored on.
#[derive(Clone, Debug)]
pub enum Corpus {
    /// UTF-8 text, tokenized with the reference's tokenizer (BOS first where it adds one).
    Text(String),
    /// Sequences sampled from the reference at temperature 1 with this seed, kept in `cache`
    /// (read when it holds them, written when not).
    Sampled {
        seed: u64,
        cache: Option<std::path::PathBuf>,
    },
}

/// How much to score: the chunk size and how many chunks (`None`: all the corpus holds).
#[derive(Clone, Copy, Debug)]
pub struct Scoring {
    pub n_ctx: u32,
    pub chunks: Option<u32>,
}

/// Scores `model` against `reference` (the same model when it is its own reference) on
/// `corpus`; progress goes to `probe` as phase `quality`, one step per chunk.
pub fn score(
    model: &LoadedModel,
    reference: &LoadedModel,
    corpus: &Corpus,
    scoring: Scoring,
    params: &CellParams,
    probe: &mut dyn Probe,
) -> Result<QualityStats> {
    let n_vocab = reference.n_vocab();
    if model.n_vocab() != n_vocab {
        bail!(
            "the reference has a vocabulary of {n_vocab} tokens, this model {}: they do not share \
             a tokenizer, so their distributions cannot be compared",
            model.n_vocab()
        );
    }
    let n_ctx = scoring.n_ctx as usize;
    let tokens = match corpus {
        Corpus::Text(text) => corpus_tokens(model, reference, text)?,
        Corpus::Sampled { seed, cache } => {
            let n = n_ctx * scoring.chunks.map_or(2, |c| c.max(2) as usize);
            match cache.as_deref().and_then(|p| read_tokens(p, n, n_vocab)) {
                Some(t) => t,
                None => {
                    let t = sample(reference, n, n_ctx, *seed, params)?;
                    if let Some(p) = cache {
                        write_tokens(p, &t)?;
                    }
                    t
                }
            }
        }
    };
    let (add_bos, bos) = reference.bos();
    let plan = quality::chunk_plan(
        tokens.len(),
        n_ctx,
        scoring.chunks.map(|c| c as usize),
        add_bos,
    )?;
    let same = std::ptr::eq(model, reference);
    let mut ref_ctx = Scorer::new(reference, scoring.n_ctx, params)?;
    let mut q_ctx = if same {
        None
    } else {
        Some(Scorer::new(model, scoring.n_ctx, params)?)
    };
    let mut acc = QualityAccumulator::new();
    for (i, chunk) in plan.iter().enumerate() {
        probe.progress("quality", i as u32, plan.len() as u32);
        let input = chunk.decode_input(&tokens, bos)?;
        let first = chunk.first_scored - chunk.start;
        let ref_rows = ref_ctx.logits(&input, first)?;
        let ref_lp: Vec<Vec<f64>> = par_map(ref_rows.chunks(n_vocab).collect(), |_, row| {
            quality::log_softmax(row)
        })
        .into_iter()
        .collect::<Result<_, _>>()
        .context("the reference's logits")?;
        let q_rows = match q_ctx.as_mut() {
            Some(q) => q.logits(&input, first)?,
            None => ref_rows,
        };
        let scores = par_map(q_rows.chunks(n_vocab).collect(), |k, row| {
            quality::score_token(&ref_lp[k], row, input[first + k + 1] as usize)
        });
        for s in scores {
            acc.push(&s?)?;
        }
    }
    probe.progress("quality", plan.len() as u32, plan.len() as u32);
    Ok(acc.stats()?)
}

/// `f(i, item)` for every item, on all cores (on a GPU, the log-softmaxes of a chunk's rows in
/// `f64` would otherwise take longer than decoding it); results in the items' order, so the
/// statistics do not depend on the number of threads.
fn par_map<T: Sync, R: Send>(items: Vec<T>, f: impl Fn(usize, &T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let f = &f;
        let parts: Vec<_> = items
            .chunks(per)
            .enumerate()
            .map(|(c, part)| {
                s.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, x)| f(c * per + i, x))
                        .collect::<Vec<R>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The corpus tokenized by the reference; the quant must tokenize it identically (the same
/// tokenizer), else their distributions are not over the same tokens.
fn corpus_tokens(
    model: &LoadedModel,
    reference: &LoadedModel,
    text: &str,
) -> Result<Vec<sys::llama_token>> {
    let tokens = reference.tokenize(text).context("tokenizing the corpus")?;
    if !std::ptr::eq(model, reference) && model.tokenize(text)? != tokens {
        bail!(
            "the reference and this model tokenize the corpus differently: they do not share a \
             tokenizer"
        );
    }
    Ok(tokens)
}

/// `n` tokens sampled from `model` at temperature 1, in sequences of `n_ctx` starting with BOS
/// (or a random token where the model adds none), seeded: the same seed gives the same corpus.
fn sample(
    model: &LoadedModel,
    n: usize,
    n_ctx: usize,
    seed: u64,
    params: &CellParams,
) -> Result<Vec<sys::llama_token>> {
    let n_vocab = model.n_vocab();
    let (add_bos, bos) = model.bos();
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    let mut ctx = Scorer::new(model, n_ctx as u32, params)?;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        ctx.clear();
        let mut tok = if add_bos {
            bos
        } else {
            rng.random_range(0..n_vocab as i32)
        };
        for pos in 0..n_ctx {
            out.push(tok);
            if pos + 1 == n_ctx {
                break;
            }
            let logits = ctx.logits_at(tok, pos)?;
            let lp = quality::log_softmax(logits).context("sampling the corpus")?;
            tok = draw(&lp, rng.random::<f64>()) as sys::llama_token;
        }
    }
    out.truncate(n);
    Ok(out)
}

/// Cached sampled tokens: `n` little-endian u32s below `n_vocab`, else `None` (sample again).
fn read_tokens(path: &std::path::Path, n: usize, n_vocab: usize) -> Option<Vec<sys::llama_token>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() != n * 4 {
        return None;
    }
    let t: Vec<sys::llama_token> = bytes
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    t.iter()
        .all(|&x| x >= 0 && (x as usize) < n_vocab)
        .then_some(t)
}

fn write_tokens(path: &std::path::Path, tokens: &[sys::llama_token]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    crate::fsutil::write_atomic(path, &bytes)
}

/// The token whose cumulative probability first exceeds `u` (in [0, 1)).
fn draw(log_probs: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (i, lp) in log_probs.iter().enumerate() {
        acc += lp.exp();
        if acc > u {
            return i;
        }
    }
    log_probs.len() - 1
}

/// A context that decodes one chunk at a time from an empty cache, with logits for the
/// positions asked for.
struct Scorer {
    ptr: NonNull<sys::llama_context>,
    batch: sys::llama_batch,
    n_ctx: usize,
    n_vocab: usize,
}

impl Drop for Scorer {
    fn drop(&mut self) {
        // SAFETY: created by llama_batch_init / llama_init_from_model, freed once.
        unsafe {
            sys::llama_batch_free(self.batch);
            sys::llama_free(self.ptr.as_ptr());
        }
    }
}

impl Scorer {
    fn new(model: &LoadedModel, n_ctx: u32, p: &CellParams) -> Result<Self> {
        // SAFETY: default params with plain fields set; the model outlives the context.
        let raw = unsafe {
            let mut c = sys::llama_context_default_params();
            c.n_ctx = n_ctx;
            c.n_batch = n_ctx;
            c.n_ubatch = n_ctx.min(p.n_ubatch);
            c.n_seq_max = 1;
            c.n_threads = p.n_threads as i32;
            c.n_threads_batch = p.n_threads as i32;
            sys::llama_init_from_model(model.raw(), c)
        };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            anyhow::anyhow!("llama.cpp could not create a scoring context of {n_ctx} tokens")
        })?;
        // SAFETY: a batch of n_ctx tokens with one sequence id each.
        let batch = unsafe { sys::llama_batch_init(n_ctx as i32, 0, 1) };
        Ok(Scorer {
            ptr,
            batch,
            n_ctx: n_ctx as usize,
            n_vocab: model.n_vocab(),
        })
    }

    fn clear(&mut self) {
        // SAFETY: live context.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ptr.as_ptr()), true) }
    }

    /// Decodes `tokens` (one chunk) from an empty cache, with logits for every position as
    /// `llama-perplexity` asks for them, and returns those of positions
    /// `first .. tokens.len() - 1`, one row of `n_vocab` after another.
    fn logits(&mut self, tokens: &[sys::llama_token], first: usize) -> Result<Vec<f32>> {
        let n = tokens.len();
        if n > self.n_ctx || first + 1 >= n {
            bail!(
                "a chunk of {n} tokens does not fit a context of {}",
                self.n_ctx
            );
        }
        self.clear();
        // SAFETY: the batch holds n_ctx ≥ n entries with one seq id each (llama_batch_init).
        unsafe {
            let b = &mut self.batch;
            b.n_tokens = n as i32;
            for (i, &t) in tokens.iter().enumerate() {
                *b.token.add(i) = t;
                *b.pos.add(i) = i as i32;
                *b.n_seq_id.add(i) = 1;
                *(*b.seq_id.add(i)) = 0;
                // every position, as upstream: asking for fewer outputs changes the shape of
                // the last layer's matrix products, and with it the rounding of the logits
                *b.logits.add(i) = 1;
            }
        }
        self.decode()?;
        let mut out = Vec::with_capacity((n - 1 - first) * self.n_vocab);
        for i in first..n - 1 {
            out.extend_from_slice(self.row(i as i32));
        }
        Ok(out)
    }

    /// Decodes one token at `pos` (after the ones before it) and returns its logits.
    fn logits_at(&mut self, token: sys::llama_token, pos: usize) -> Result<&[f32]> {
        // SAFETY: the batch holds at least one entry.
        unsafe {
            let b = &mut self.batch;
            b.n_tokens = 1;
            *b.token = token;
            *b.pos = pos as i32;
            *b.n_seq_id = 1;
            *(*b.seq_id) = 0;
            *b.logits = 1;
        }
        self.decode()?;
        Ok(self.row(0))
    }

    fn decode(&mut self) -> Result<()> {
        // SAFETY: live context; the batch is filled for n_tokens entries.
        let rc = unsafe { sys::llama_decode(self.ptr.as_ptr(), self.batch) };
        if rc != 0 {
            bail!("llama_decode failed with code {rc} while scoring");
        }
        Ok(())
    }

    /// The logits of batch entry `i` (which asked for them).
    fn row(&self, i: i32) -> &[f32] {
        // SAFETY: after a successful decode, entries with logits set have n_vocab logits.
        unsafe {
            let p = sys::llama_get_logits_ith(self.ptr.as_ptr(), i);
            std::slice::from_raw_parts(p, self.n_vocab)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{draw, par_map};

    #[test]
    fn par_map_keeps_the_order() {
        let v: Vec<u32> = (0..1001).collect();
        let out = par_map(v.clone(), |i, x| (i as u32, x * 2));
        assert_eq!(out.len(), 1001);
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, &(j, y))| j == i as u32 && y == 2 * i as u32));
        assert!(par_map(Vec::<u32>::new(), |_, x| *x).is_empty());
    }

    #[test]
    fn draw_follows_the_cumulative_distribution() {
        let lp: Vec<f64> = [0.5f64, 0.25, 0.25].iter().map(|p| p.ln()).collect();
        assert_eq!(draw(&lp, 0.0), 0);
        assert_eq!(draw(&lp, 0.49), 0);
        assert_eq!(draw(&lp, 0.51), 1);
        assert_eq!(draw(&lp, 0.76), 2);
        assert_eq!(draw(&lp, 0.999_999), 2);
    }
}
