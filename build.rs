//! Build script: embeds the git commit and build profile, points the binary at its shared
//! libraries and backend modules, and compiles the small C++ shim that reads llama.cpp's memory
//! breakdown (a C++-only API of the pinned llama.cpp).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    git_commit();
    println!(
        "cargo:rustc-env=QB_BUILD_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );

    // Shared libraries (libllama.so, libggml*.so) are copied next to the executable (by
    // llama-cpp-sys-2 at build time, by scripts/package.sh in a release): look there first.
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN");
    println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");

    // llama-cpp-sys-2 (dynamic-backends) installs the ggml backend modules into its OUT_DIR and
    // tells direct dependents where: that folder is the fallback the binary searches at run time.
    let backends = std::env::var("DEP_LLAMA_BACKENDS_DIR").unwrap_or_default();
    println!("cargo:rustc-env=QB_BUILD_BACKENDS_DIR={backends}");
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_BACKENDS_DIR");
    // In a build tree the versioned shared libraries (libllama.so.0, ...) live in the sys
    // crate's OUT_DIR/lib: second place to look, after the executable's own folder.
    if let Some(out) = Path::new(&backends).parent() {
        println!(
            "cargo:rustc-link-arg=-Wl,-rpath,{}",
            out.join("lib").display()
        );
    }

    compile_shim(Path::new(&backends));
}

fn git_commit() {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = out(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        out(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let commit = if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    };
    println!("cargo:rustc-env=QB_GIT_COMMIT={commit}");
    // an edit of a tracked source file changes `-dirty` without touching git's index or HEAD
    for tree in ["src", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={tree}");
    }
    if let Some(git_dir) = out(&["rev-parse", "--git-dir"]) {
        let git_dir = PathBuf::from(git_dir);
        println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", git_dir.join("index").display());
        if let Some(r) = out(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", git_dir.join(r).display());
        }
    }
}

/// Compiles `src/engine/memory_shim.cpp` against the llama.cpp sources the sys crate built.
fn compile_shim(backends_dir: &Path) {
    println!("cargo:rerun-if-changed=src/engine/memory_shim.cpp");
    // OUT_DIR of llama-cpp-sys-2 is the parent of its backends folder; its CMake cache names
    // the llama.cpp source tree, whose src/llama-ext.h declares llama_get_memory_breakdown.
    let sys_out = backends_dir
        .parent()
        .expect("DEP_LLAMA_BACKENDS_DIR is set by llama-cpp-sys-2 with dynamic-backends");
    let cache = std::fs::read_to_string(sys_out.join("build").join("CMakeCache.txt"))
        .expect("llama-cpp-sys-2's CMakeCache.txt");
    let src = cache
        .lines()
        .find_map(|l| l.strip_prefix("CMAKE_HOME_DIRECTORY:INTERNAL="))
        .map(PathBuf::from)
        .expect("CMAKE_HOME_DIRECTORY in llama-cpp-sys-2's CMakeCache.txt");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("src/engine/memory_shim.cpp")
        .include(src.join("include"))
        .include(src.join("src"))
        .include(src.join("ggml").join("include"))
        .warnings(false)
        .compile("quantbench_memory_shim");
    // the shim calls into libllama and libggml-base, which the sys crate links already
    println!("cargo:rustc-link-lib=dylib=llama");
    println!("cargo:rustc-link-lib=dylib=ggml-base");
}
