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

    let llama_src = compile_shim(Path::new(&backends));
    build_rpc_module(&llama_src, Path::new(&backends));
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_VULKAN");
    if std::env::var_os("CARGO_FEATURE_VULKAN").is_some() {
        build_vulkan_module(&llama_src, Path::new(&backends));
    }
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
    // --no-optional-locks: a plain `git status` rewrites the index when it refreshes its stat
    // data (always, the first time in a fresh clone); the index is watched below, so the next
    // `cargo build` of an unchanged tree ran this script again and recompiled the crate (78 s
    // before a second default run started measuring)
    let dirty = out(&[
        "--no-optional-locks",
        "status",
        "--porcelain",
        "--untracked-files=no",
    ])
    .is_some_and(|s| !s.is_empty());
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

/// Compiles `src/engine/memory_shim.cpp` against the llama.cpp sources the sys crate built;
/// returns that llama.cpp source tree.
fn compile_shim(backends_dir: &Path) -> PathBuf {
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
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let inputs = format!(
        "{}\n{}",
        src.display(),
        std::fs::read_to_string("src/engine/memory_shim.cpp").expect("memory_shim.cpp")
    );
    let lib = out_dir.join("libquantbench_memory_shim.a");
    if up_to_date(&lib, &inputs) {
        // what cc's compile() would print
        println!("cargo:rustc-link-search=native={}", out_dir.display());
        println!("cargo:rustc-link-lib=static=quantbench_memory_shim");
        println!("cargo:rustc-link-lib=stdc++");
    } else {
        cc::Build::new()
            .cpp(true)
            .std("c++17")
            .file("src/engine/memory_shim.cpp")
            .include(src.join("include"))
            .include(src.join("src"))
            .include(src.join("ggml").join("include"))
            .warnings(false)
            .compile("quantbench_memory_shim");
        record(&lib, &inputs);
    }
    // the shim calls into libllama and libggml-base, which the sys crate links already
    println!("cargo:rustc-link-lib=dylib=llama");
    println!("cargo:rustc-link-lib=dylib=ggml-base");
    src
}

/// Builds llama.cpp's RPC backend (`ggml/src/ggml-rpc`, part of the vendored sources but not
/// of the sys crate's build) as a dynamically loaded backend module, `libggml-rpc.so`, into
/// `OUT_DIR/backends`, as CMake's `ggml_add_backend_library` would with `GGML_BACKEND_DL`
/// (TCP transport only: no RDMA). The binary searches that folder after its own
/// (`QB_BUILD_RPC_DIR`); `scripts/package.sh` ships the file next to the binary.
fn build_rpc_module(llama_src: &Path, backends_dir: &Path) {
    let ggml = llama_src.join("ggml");
    let rpc = ggml.join("src").join("ggml-rpc");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("backends");
    std::fs::create_dir_all(&out).expect("OUT_DIR/backends");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .pic(true)
        .opt_level(2)
        .files([rpc.join("ggml-rpc.cpp"), rpc.join("transport.cpp")])
        .include(ggml.join("include"))
        .include(ggml.join("src"))
        .include(&rpc)
        .define("GGML_BACKEND_DL", None)
        .define("GGML_BACKEND_BUILD", None)
        .define("GGML_BACKEND_SHARED", None)
        .define("GGML_SHARED", None)
        .define("NDEBUG", None)
        .warnings(false);
    let lib_dir = backends_dir
        .parent()
        .expect("llama-cpp-sys-2's OUT_DIR")
        .join("lib");
    let module = out.join("libggml-rpc.so");
    println!("cargo:rustc-env=QB_BUILD_RPC_DIR={}", out.display());
    // The sources are those of the pinned crate (read-only in cargo's registry): compiled once
    // per build folder, not again at every edit of quantbench's own sources (which reruns this
    // script for the git stamp).
    let inputs = format!(
        "rpc module 1\n{}\n{}\n{:?}",
        rpc.display(),
        lib_dir.display(),
        build.get_compiler().to_command()
    );
    if !up_to_date(&module, &inputs) {
        link_rpc_module(&build, &module, &lib_dir);
        record(&module, &inputs);
    }
    rpc_protocol(&ggml, &rpc);
}

/// Compiles and links `libggml-rpc.so`.
fn link_rpc_module(build: &cc::Build, module: &Path, lib_dir: &Path) {
    let objects = build.compile_intermediates();
    let status = build
        .get_compiler()
        .to_command()
        .arg("-shared")
        .arg("-o")
        .arg(module)
        .args(&objects)
        .arg(format!("-L{}", lib_dir.display()))
        .arg("-lggml-base")
        .arg("-pthread")
        .arg("-Wl,-rpath,$ORIGIN")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .expect("running the C++ compiler to link libggml-rpc.so");
    assert!(status.success(), "linking libggml-rpc.so failed");
}

/// Builds llama.cpp's Vulkan backend (`ggml/src/ggml-vulkan`) as a dynamically loaded module,
/// `libggml-vulkan.so`, into `OUT_DIR/backends` beside the RPC module (`--features vulkan`):
/// CMake runs `cmake/ggml-vulkan/CMakeLists.txt`, which uses ggml-vulkan's own CMake file
/// (shader generator, glslc) and links the module to the sys crate's libggml-base. The
/// binary itself does not link Vulkan: without `libvulkan.so.1` the module fails to load and
/// the other backends run.
fn build_vulkan_module(llama_src: &Path, backends_dir: &Path) {
    let recipe = Path::new("cmake").join("ggml-vulkan");
    println!("cargo:rerun-if-changed={}", recipe.display());
    let lib_dir = backends_dir
        .parent()
        .expect("llama-cpp-sys-2's OUT_DIR")
        .join("lib");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let module = out_dir.join("backends").join("libggml-vulkan.so");
    let inputs = format!(
        "vulkan module 1\n{}\n{}\n{}",
        llama_src.display(),
        lib_dir.display(),
        std::fs::read_to_string(recipe.join("CMakeLists.txt")).expect("the Vulkan recipe")
            + &std::fs::read_to_string(recipe.join("vk-compat.h")).expect("vk-compat.h")
    );
    if up_to_date(&module, &inputs) {
        return;
    }
    let missing: Vec<&str> = [
        ("glslc", which("glslc")),
        (
            "libvulkan-dev",
            Path::new("/usr/include/vulkan/vulkan.hpp").is_file(),
        ),
        ("spirv-headers", Path::new("/usr/include/spirv").is_dir()),
    ]
    .iter()
    .filter(|(_, found)| !found)
    .map(|(p, _)| *p)
    .collect();
    if !missing.is_empty() && std::env::var_os("VULKAN_SDK").is_none() {
        panic!(
            "--features vulkan needs the Vulkan headers, glslc and SPIR-V headers; missing: {} \
             (Debian/Ubuntu: `bash scripts/prereqs.sh --vulkan` installs glslc libvulkan-dev \
             spirv-headers; or set VULKAN_SDK to a LunarG SDK)",
            missing.join(", ")
        );
    }
    let build = out_dir.join("vulkan-build");
    let mut configure = Command::new("cmake");
    configure
        .arg("-S")
        .arg(&recipe)
        .arg("-B")
        .arg(&build)
        .arg(format!("-DQB_LLAMA_SRC={}", llama_src.display()))
        .arg(format!(
            "-DQB_GGML_BASE={}",
            lib_dir.join("libggml-base.so").display()
        ))
        .arg("-DCMAKE_BUILD_TYPE=Release");
    if which("ninja") {
        configure.arg("-GNinja");
    }
    run(&mut configure, "configuring the Vulkan backend (cmake)");
    let jobs = std::env::var("NUM_JOBS").unwrap_or_else(|_| "2".into());
    run(
        Command::new("cmake").arg("--build").arg(&build).args([
            "--target",
            "ggml-vulkan",
            "--parallel",
            &jobs,
        ]),
        "building the Vulkan backend (cmake --build)",
    );
    let built = build.join("bin").join("libggml-vulkan.so");
    std::fs::copy(&built, &module)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), module.display()));
    record(&module, &inputs);
}

/// Whether `program` is on PATH.
fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("{what}: could not start {cmd:?}: {e}"));
    assert!(status.success(), "{what} failed ({status}): {cmd:?}");
}

/// Whether `output` exists and was made from `inputs` (a description of everything it is
/// made from, recorded beside it by [`record`]).
fn up_to_date(output: &Path, inputs: &str) -> bool {
    output.is_file() && std::fs::read_to_string(stamp(output)).is_ok_and(|s| s == inputs)
}

fn record(output: &Path, inputs: &str) {
    std::fs::write(stamp(output), inputs).expect("writing a build stamp into OUT_DIR");
}

fn stamp(output: &Path) -> PathBuf {
    let mut name = output.file_name().expect("a file").to_os_string();
    name.push(".inputs");
    output.with_file_name(name)
}

/// The RPC protocol version and handshake size of these sources, for quantbench's own check of
/// a server before llama.cpp (which aborts the process on a mismatch) connects to it.
fn rpc_protocol(ggml: &Path, rpc: &Path) {
    let header = std::fs::read_to_string(ggml.join("include").join("ggml-rpc.h"))
        .expect("ggml/include/ggml-rpc.h");
    let define = |name: &str| {
        header
            .lines()
            .find_map(|l| l.strip_prefix("#define ")?.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or_else(|| panic!("{name} in ggml-rpc.h"))
    };
    let version = [
        "RPC_PROTO_MAJOR_VERSION",
        "RPC_PROTO_MINOR_VERSION",
        "RPC_PROTO_PATCH_VERSION",
    ]
    .map(define);
    println!(
        "cargo:rustc-env=QB_RPC_PROTO={}.{}.{}",
        version[0], version[1], version[2]
    );
    let transport = std::fs::read_to_string(rpc.join("transport.h")).expect("ggml-rpc/transport.h");
    let caps = transport
        .lines()
        .find_map(|l| l.split("RPC_CONN_CAPS_SIZE").nth(1))
        .and_then(|v| v.trim().strip_prefix('='))
        .and_then(|v| v.trim().trim_end_matches(';').trim().parse::<usize>().ok())
        .expect("RPC_CONN_CAPS_SIZE in ggml-rpc/transport.h");
    println!("cargo:rustc-env=QB_RPC_CONN_CAPS={caps}");
}
