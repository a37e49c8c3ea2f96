# Which CPU backend variants llama.cpp's build compiles for quantbench.
#
# CMake includes this file after every project() call of llama.cpp's build: cargo passes
# CMAKE_PROJECT_INCLUDE (.cargo/config.toml) to the build script of llama-cpp-sys-2, which
# forwards every CMAKE_* variable to CMake. That crate's `dynamic-backends` feature asks for
# all 14 x86 variants of ggml's CPU backend (GGML_CPU_ALL_VARIANTS), most of a first build's
# time; a machine runs only one of them. The environment variable QUANTBENCH_CPU_VARIANTS,
# read when llama.cpp's build is first configured, chooses:
#
#   native (default)  one module, libggml-cpu.so, compiled for the variant of ggml's x86 list
#                     that ggml would pick on this machine (the highest score among those whose
#                     instructions /proc/cpuinfo lists); every variant where that cannot be told
#   all               every variant, as the crate builds them (scripts/package.sh: the release
#                     tarball runs on any x86-64 machine)
#   <tag>             one module for that variant of ggml's list (haswell, zen4, ...)
#
# The choice is made once per build folder (the crate does not configure CMake again): to
# change it, build into another CARGO_TARGET_DIR or `cargo clean -p llama-cpp-sys-2`.

if(NOT GGML_CPU_ALL_VARIANTS OR DEFINED QB_CPU_VARIANT)
  return() # not the crate's dynamic-backends build, or decided at an earlier project() call
endif()

set(_qb_choice "$ENV{QUANTBENCH_CPU_VARIANTS}")
if(_qb_choice STREQUAL "")
  set(_qb_choice native)
endif()
if(_qb_choice STREQUAL "all")
  message(STATUS "quantbench: every CPU backend variant (QUANTBENCH_CPU_VARIANTS=all)")
  set(QB_CPU_VARIANT all)
  return()
endif()

# ggml's x86 variants (ggml/src/CMakeLists.txt) and the features each is compiled with
set(_qb_x64)
set(_qb_sse42 SSE42)
set(_qb_sandybridge SSE42 AVX)
set(_qb_ivybridge SSE42 AVX F16C)
set(_qb_piledriver SSE42 AVX F16C FMA)
set(_qb_haswell SSE42 AVX F16C FMA AVX2 BMI2)
set(_qb_skylakex ${_qb_haswell} AVX512)
set(_qb_cannonlake ${_qb_haswell} AVX512 AVX512_VBMI)
set(_qb_cascadelake ${_qb_haswell} AVX512 AVX512_VNNI)
set(_qb_icelake ${_qb_haswell} AVX512 AVX512_VBMI AVX512_VNNI)
set(_qb_cooperlake ${_qb_haswell} AVX512 AVX512_VNNI AVX512_BF16)
set(_qb_zen4 ${_qb_haswell} AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16)
set(_qb_alderlake ${_qb_haswell} AVX_VNNI)
set(_qb_sapphirerapids ${_qb_zen4} AMX_TILE AMX_INT8)
set(_qb_tags x64 sse42 sandybridge ivybridge piledriver haswell skylakex cannonlake cascadelake
  icelake cooperlake zen4 alderlake sapphirerapids)
# the flags /proc/cpuinfo lists for each feature, and the feature's weight in ggml's score
# (ggml/src/ggml-cpu/arch/x86/cpu-feats.cpp)
set(_qb_flags_SSE42 sse4_2)
set(_qb_flags_AVX avx)
set(_qb_flags_F16C f16c)
set(_qb_flags_FMA fma)
set(_qb_flags_AVX2 avx2)
set(_qb_flags_BMI2 bmi2)
set(_qb_flags_AVX_VNNI avx_vnni)
set(_qb_flags_AVX512 avx512f avx512cd avx512vl avx512dq avx512bw)
set(_qb_flags_AVX512_VBMI avx512vbmi)
set(_qb_flags_AVX512_VNNI avx512_vnni)
set(_qb_flags_AVX512_BF16 avx512_bf16)
set(_qb_flags_AMX_TILE amx_tile)
set(_qb_flags_AMX_INT8 amx_int8)
set(_qb_score_FMA 1)
set(_qb_score_F16C 2)
set(_qb_score_SSE42 4)
set(_qb_score_BMI2 8)
set(_qb_score_AVX 16)
set(_qb_score_AVX2 32)
set(_qb_score_AVX_VNNI 64)
set(_qb_score_AVX512 128)
set(_qb_score_AVX512_VBMI 256)
set(_qb_score_AVX512_BF16 512)
set(_qb_score_AVX512_VNNI 1024)
set(_qb_score_AMX_TILE 0)
set(_qb_score_AMX_INT8 2048)

set(_qb_tag "")
if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i[3-6]86)$")
  message(STATUS "quantbench: not x86 (${CMAKE_SYSTEM_PROCESSOR}): every CPU backend variant")
elseif(_qb_choice STREQUAL "native")
  if(EXISTS /proc/cpuinfo)
    file(STRINGS /proc/cpuinfo _qb_flags_line REGEX "^flags[ \t]*:" LIMIT_COUNT 1)
  endif()
  if(_qb_flags_line)
    string(REGEX REPLACE "^flags[ \t]*:[ \t]*" "" _qb_flags_line "${_qb_flags_line}")
    string(REPLACE " " ";" _qb_cpu_flags "${_qb_flags_line}")
    set(_qb_best -1)
    foreach(_t IN LISTS _qb_tags)
      set(_score 1)
      foreach(_f IN LISTS _qb_${_t})
        foreach(_flag IN LISTS _qb_flags_${_f})
          if(NOT _flag IN_LIST _qb_cpu_flags)
            set(_score -1)
          endif()
        endforeach()
        if(_score GREATER -1)
          math(EXPR _score "${_score} + ${_qb_score_${_f}}")
        endif()
      endforeach()
      if(_score GREATER _qb_best)
        set(_qb_best ${_score})
        set(_qb_tag ${_t})
      endif()
    endforeach()
  else()
    message(STATUS "quantbench: no /proc/cpuinfo flags: every CPU backend variant")
  endif()
elseif(_qb_choice IN_LIST _qb_tags)
  set(_qb_tag ${_qb_choice})
else()
  message(FATAL_ERROR "QUANTBENCH_CPU_VARIANTS=${_qb_choice}: expected native, all or one of "
    "ggml's x86 variants: ${_qb_tags}")
endif()

if(_qb_tag STREQUAL "")
  set(QB_CPU_VARIANT all)
  return()
endif()
# One module: ggml's single-backend path (GGML_CPU_ALL_VARIANTS off) compiled with exactly the
# variant's features. Normal variables shadow the crate's cache entries (policy CMP0077).
set(QB_CPU_VARIANT ${_qb_tag})
set(GGML_CPU_ALL_VARIANTS OFF)
set(GGML_NATIVE OFF)
foreach(_f SSE42 AVX F16C FMA AVX2 BMI2 AVX_VNNI AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16
    AMX_TILE AMX_INT8 AMX_BF16)
  if(_f IN_LIST _qb_${_qb_tag})
    set(GGML_${_f} ON)
  else()
    set(GGML_${_f} OFF)
  endif()
endforeach()
message(STATUS "quantbench: one CPU backend module, for ggml's variant ${_qb_tag} "
  "(QUANTBENCH_CPU_VARIANTS=${_qb_choice}; 'all' builds every variant)")
