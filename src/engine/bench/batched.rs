//! Several sequences in one context, and a context that already holds tokens: the tests of
//! `n_parallel` > 1 and `n_depth` > 0.
//!
//! With B sequences the tests are llama-batched-bench's (`tools/batched-bench`): the cache is
//! emptied (down to the depth prefix), B prompts of `n_prompt` tokens are decoded in `n_batch`
//! pieces, synchronised after each (with `shared_prompt` one prompt, then copied to the other
//! sequences, the copy inside the timed region as upstream), then `n_gen` steps each decoding
//! one token for every sequence. S_PP = prompt tokens / t_pp, S_TG = B × n_gen / t_tg. The
//! generation test does the same with the tokenized prompt and greedy sampling on the host
//! (an argmax over each sequence's logits), timing the first token of the batch (TTFT) and the
//! steps after it (decode speed per sequence).
//!
//! The depth is filled once, untimed: `n_depth` random tokens in sequence 0, copied to the
//! other sequences (one prefix in the unified cache, as a conversation the sequences share);
//! between tests only the positions after it are removed.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use llama_cpp_sys_2 as sys;

use super::{argmax, counted_rate, Context, GenBuffers, Probe};
use crate::plan::CellParams;
use crate::protocol::{MemoryMeasurement, RepSample};

/// A `llama_batch` of up to `capacity` tokens with one sequence id each.
pub(super) struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by llama_batch_init, freed once.
        unsafe { sys::llama_batch_free(self.raw) }
    }
}

impl Batch {
    fn new(capacity: usize) -> Self {
        // SAFETY: a batch of `capacity` tokens with room for one sequence id each.
        let raw = unsafe { sys::llama_batch_init(capacity as i32, 0, 1) };
        Batch { raw, capacity }
    }

    fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    /// Appends a token of sequence `seq` at `pos`.
    fn add(&mut self, token: sys::llama_token, pos: u32, seq: u32, logits: bool) {
        let i = self.raw.n_tokens as usize;
        assert!(
            i < self.capacity,
            "batch of {} tokens overflowed",
            self.capacity
        );
        // SAFETY: i < capacity; each entry has room for one sequence id.
        unsafe {
            *self.raw.token.add(i) = token;
            *self.raw.pos.add(i) = pos as i32;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = seq as i32;
            *self.raw.logits.add(i) = i8::from(logits);
        }
        self.raw.n_tokens += 1;
    }

    fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }
}

impl Context {
    /// The batch, allocated for `capacity` tokens (again when a larger one is needed).
    fn batch_for(&mut self, capacity: usize) -> &mut Batch {
        if self.batch.as_ref().is_none_or(|b| b.capacity < capacity) {
            self.batch = Some(Batch::new(capacity.max(1)));
        }
        let b = self.batch.as_mut().expect("just allocated");
        b.clear();
        b
    }

    /// Decodes the batch in pieces of `n_batch` tokens, synchronising after each (as
    /// llama-batched-bench's `decode_helper`).
    fn decode_batch(&mut self, n_batch: u32) -> Result<()> {
        self.decode_batch_then(n_batch, |_, _, _| {})
    }

    /// [`Self::decode_batch`], calling `after(self, first, len)` after each piece (entries
    /// `first..first + len` of the batch; their logits are those of that decode alone).
    fn decode_batch_then(
        &mut self,
        n_batch: u32,
        mut after: impl FnMut(&mut Self, usize, usize),
    ) -> Result<()> {
        let b = self.batch.as_ref().expect("a filled batch").raw;
        let n = b.n_tokens;
        let step = n_batch.max(1) as i32;
        let mut i = 0;
        while i < n {
            let k = step.min(n - i);
            // SAFETY: a view of entries i..i+k of the filled batch.
            let rc = unsafe {
                let view = sys::llama_batch {
                    n_tokens: k,
                    token: b.token.add(i as usize),
                    embd: std::ptr::null_mut(),
                    pos: b.pos.add(i as usize),
                    n_seq_id: b.n_seq_id.add(i as usize),
                    seq_id: b.seq_id.add(i as usize),
                    logits: b.logits.add(i as usize),
                };
                sys::llama_decode(self.ptr(), view)
            };
            if rc != 0 {
                bail!(
                    "llama_decode of {k} tokens failed with code {rc} (1 = no KV slot: the \
                     context is too small for the sequences, 2 = aborted, <0 = error)"
                );
            }
            self.synchronize();
            after(self, i as usize, k as usize);
            i += k;
        }
        Ok(())
    }

    /// Copies sequence 0 (all its positions) to sequences 1..n.
    fn copy_seq0(&mut self, n: u32) {
        // SAFETY: live context; sequence ids below n_seq_max.
        unsafe {
            let mem = sys::llama_get_memory(self.ptr());
            for j in 1..n {
                sys::llama_memory_seq_cp(mem, 0, j as i32, -1, -1);
            }
        }
    }

    /// Fills the depth prefix once (untimed): `tokens` in sequence 0 from position 0, then in
    /// every other sequence.
    pub(super) fn fill_depth(&mut self, tokens: &[sys::llama_token], n_batch: u32) -> Result<()> {
        self.depth = 0;
        if tokens.is_empty() {
            return Ok(());
        }
        self.clear();
        let b = self.batch_for(tokens.len());
        for (i, &t) in tokens.iter().enumerate() {
            b.add(t, i as u32, 0, false);
        }
        self.decode_batch(n_batch)?;
        // SAFETY: live context.
        let n_seq = unsafe { sys::llama_n_seq_max(self.ptr()) };
        self.copy_seq0(n_seq);
        self.depth = tokens.len() as u32;
        Ok(())
    }

    /// The prompts of a batched test after the depth: `prompt` for each of `n` sequences (one
    /// sequence with `shared`, copied after decoding). With `first` given, it receives each
    /// sequence's greedy first token (from the logits of its prompt's last token; one for all
    /// with `shared`). Returns the number of prompt tokens decoded.
    fn decode_prompts(
        &mut self,
        prompt: &[sys::llama_token],
        n: u32,
        shared: bool,
        n_batch: u32,
        first: Option<&mut [sys::llama_token]>,
    ) -> Result<usize> {
        self.clear();
        let depth = self.depth;
        let seqs = if shared { 1 } else { n };
        let len = prompt.len();
        let b = self.batch_for(len * seqs as usize);
        for j in 0..seqs {
            for (i, &t) in prompt.iter().enumerate() {
                b.add(t, depth + i as u32, j, i + 1 == len);
            }
        }
        let decoded = b.len();
        match first {
            None => self.decode_batch(n_batch)?,
            Some(first) => {
                // sequence j's last prompt token is entry (j + 1) × len − 1 of the batch
                self.decode_batch_then(n_batch, |ctx, start, k| {
                    for (j, t) in first.iter_mut().enumerate().take(seqs as usize) {
                        let last = (j + 1) * len - 1;
                        if (start..start + k).contains(&last) {
                            *t = ctx.row_argmax((last - start) as i32);
                        }
                    }
                })?;
                if shared {
                    let t = first[0];
                    first.fill(t);
                }
            }
        }
        if shared {
            self.copy_seq0(n);
        }
        Ok(decoded)
    }

    /// One step of every sequence: `tokens[j]` for sequence `j` at `pos`, logits for each, in
    /// one decode (the output of sequence `j` is row `j`).
    fn decode_step(&mut self, tokens: &[sys::llama_token], pos: u32, n_batch: u32) -> Result<()> {
        if tokens.len() > n_batch as usize {
            bail!(
                "n_batch {n_batch} is smaller than n_parallel {}: each step decodes one token of                  every sequence in one batch; use n_batch >= n_parallel",
                tokens.len()
            );
        }
        let b = self.batch_for(tokens.len());
        for (j, &t) in tokens.iter().enumerate() {
            b.add(t, pos, j as u32, true);
        }
        self.decode_batch(n_batch)
    }

    /// llama-batched-bench's test of B sequences, repeated: warm-up, then the timed
    /// repetitions, each a pp (the prompts) followed by a tg (`n_gen` steps of B tokens).
    pub(super) fn batched_bench(
        &mut self,
        p: &CellParams,
        pp_tokens: &[sys::llama_token],
        tg_tokens: &[sys::llama_token],
        memory: &mut MemoryMeasurement,
        probe: &mut dyn Probe,
    ) -> Result<Vec<RepSample>> {
        self.bench_reps(p, memory, probe, |ctx| {
            ctx.batched_rep(p, pp_tokens, tg_tokens)
        })
    }

    /// One pp + tg of B sequences, as llama-batched-bench times them.
    fn batched_rep(
        &mut self,
        p: &CellParams,
        pp_tokens: &[sys::llama_token],
        tg_tokens: &[sys::llama_token],
    ) -> Result<RepSample> {
        let b = p.n_parallel;
        self.reset_perf();
        let t0 = Instant::now();
        let decoded = self.decode_prompts(pp_tokens, b, p.shared_prompt, p.n_batch, None)?;
        let pp_ms = t0.elapsed().as_secs_f64() * 1e3;
        let d = self.perf();
        let pp_llama = counted_rate(d.n_p_eval, d.t_p_eval_ms);
        let start = self.depth + pp_tokens.len() as u32;
        self.reset_perf();
        let mut step = vec![0; b as usize];
        let t1 = Instant::now();
        for (i, &t) in tg_tokens.iter().enumerate() {
            step.fill(t);
            self.decode_step(&step, start + i as u32, p.n_batch)?;
        }
        let tg_ms = t1.elapsed().as_secs_f64() * 1e3;
        let d = self.perf();
        // each step is a batch of B tokens, which llama.cpp counts as prompt evaluation
        let tg_llama = counted_rate(d.n_p_eval, d.t_p_eval_ms);
        let (n_prompt, n_gen, bf) = (pp_tokens.len() as f64, tg_tokens.len() as f64, f64::from(b));
        Ok(RepSample {
            pp_ms,
            pp_tok_s: n_prompt / (pp_ms / 1e3),
            tg_ms,
            tg_tok_s: n_gen / (tg_ms / 1e3),
            pp_tok_s_llama: pp_llama.map(|r| r / decoded as f64 * n_prompt),
            tg_tok_s_llama: tg_llama.map(|r| r / bf),
            throughput_tok_s: Some(bf * n_gen / (tg_ms / 1e3)),
            pp_throughput_tok_s: Some(decoded as f64 / (pp_ms / 1e3)),
            throughput_tok_s_llama: tg_llama,
            ..Default::default()
        })
    }

    /// The generation test of B sequences (sequence 0's tokens are returned).
    pub(super) fn batched_user_generation(
        &mut self,
        p: &CellParams,
        prompt: &[sys::llama_token],
        reps: &mut [RepSample],
        probe: &mut dyn Probe,
    ) -> Result<GenBuffers> {
        self.generation_reps(p, reps, probe, |ctx, gen| {
            ctx.generate_batched(p, prompt, gen)
        })
    }

    /// B sequences answering `prompt` with greedy sampling on the host; `out.token_ms[k]` is
    /// when every sequence had its token `k`. Returns the TTFT of the batch in ms.
    pub(super) fn generate_batched(
        &mut self,
        p: &CellParams,
        prompt: &[sys::llama_token],
        out: &mut GenBuffers,
    ) -> Result<f64> {
        let b = p.n_parallel as usize;
        out.tokens.clear();
        out.token_ms.clear();
        let (mut next, mut cur) = (vec![0; b], vec![0; b]);
        let mut sampling = Duration::ZERO;
        let t0 = Instant::now();
        self.decode_prompts(
            prompt,
            p.n_parallel,
            p.shared_prompt,
            p.n_batch,
            Some(&mut next),
        )?;
        out.token_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        out.tokens.push(next[0]);
        let start = self.depth + prompt.len() as u32;
        for k in 1..p.n_gen {
            cur.copy_from_slice(&next);
            self.decode_step(&cur, start + k - 1, p.n_batch)?;
            let ts = Instant::now();
            for (j, t) in next.iter_mut().enumerate() {
                *t = self.row_argmax(j as i32);
            }
            sampling += ts.elapsed();
            out.token_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            out.tokens.push(next[0]);
        }
        out.sample_us = sampling.as_secs_f64() * 1e6 / f64::from(p.n_gen.max(2) - 1);
        Ok(out.token_ms[0])
    }

    /// Greedy token from the logits of output `i` of the last decode.
    fn row_argmax(&mut self, i: i32) -> sys::llama_token {
        argmax(self.logits_ith(i)) as sys::llama_token
    }
}
