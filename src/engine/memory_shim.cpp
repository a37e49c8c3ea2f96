// C shim over llama.cpp's C++-only memory breakdown API (src/llama-ext.h of the pinned
// llama.cpp): flattens the std::map into an array of plain structs Rust can read.
#include "llama.h"
#include "llama-ext.h"
#include "ggml-backend.h"

#include <cstring>

extern "C" {

struct qb_buffer_memory {
    char name[64];
    int is_host;
    size_t model;
    size_t context;
    size_t compute;
};

// Writes up to `cap` entries to `out`; returns the number of buffer types (may exceed cap).
size_t qb_memory_breakdown(const struct llama_context * ctx, struct qb_buffer_memory * out, size_t cap) {
    llama_memory_breakdown mb = llama_get_memory_breakdown(ctx);
    size_t i = 0;
    for (const auto & kv : mb) {
        if (i < cap) {
            qb_buffer_memory & o = out[i];
            std::memset(&o, 0, sizeof(o));
            const char * name = ggml_backend_buft_name(kv.first);
            std::strncpy(o.name, name ? name : "?", sizeof(o.name) - 1);
            // Host memory: host buffers, and buffers of CPU devices that are not "host" in
            // ggml's sense (e.g. CPU_REPACK, AMX hold repacked weights in ordinary RAM).
            ggml_backend_dev_t dev = ggml_backend_buft_get_device(kv.first);
            bool cpu_dev = dev != nullptr && ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU;
            o.is_host = (ggml_backend_buft_is_host(kv.first) || cpu_dev) ? 1 : 0;
            o.model = kv.second.model;
            o.context = kv.second.context;
            o.compute = kv.second.compute;
        }
        i++;
    }
    return i;
}

}
