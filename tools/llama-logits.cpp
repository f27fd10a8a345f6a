// llama-logits: dump the logits of EVERY position of one token sequence, as computed by
// llama.cpp, into a NumPy .npy file. Used by tools/gen-ref-fixtures.sh to make the reference
// logits under tests/fixtures/logits/.
//
//   llama-logits -m MODEL.gguf --ids 1,2,3 --out FILE.npy [--threads N] [--f16] [--verbose]
//
// The ids are evaluated as ONE sequence (seq_id 0, positions 0..n-1) in ONE llama_decode call:
// n_ctx >= n_ids and n_batch = n_ubatch >= n_ids, so the whole prompt is a single ubatch, and
// batch.logits[j] = 1 for every j. The ids are used exactly as given: no BOS is added here
// (tokenize with llama-tokenize, which adds BOS when the model asks for it).
//
// Output: a C-ordered array of shape [n_ids, n_vocab], little-endian float32 ('<f4'), or float16
// ('<f2', round-to-nearest-even) with --f16. Row j holds the logits after token j, i.e. the
// prediction for position j+1.
//
// Attention settings: this program keeps llama.cpp's defaults from llama_context_default_params():
// flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO (llama.cpp resolves AUTO at context creation; on a
// CPU-only build the CPU backend supports FLASH_ATTN_EXT, so it resolves to ENABLED: the log line
// "Flash Attention enabled" from resolve_fused_ops is echoed on stderr), and the KV cache types
// type_k = type_v = GGML_TYPE_F16. We do not force flash attention on or off.
//
// Written against include/llama.h of llama.cpp 0c1e570 (vendored in llama-cpp-python 0.3.36).

#include "llama.h"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static bool g_verbose = false;
static std::string g_fa_line;

static void log_cb(enum ggml_log_level level, const char * text, void * /*user*/) {
    if (text == nullptr) {
        return;
    }
    const bool fa = std::strstr(text, "Flash Attention") != nullptr || std::strstr(text, "flash_attn") != nullptr;
    if (fa) {
        g_fa_line += text;
    }
    if (g_verbose || fa || level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) {
        std::fputs(text, stderr);
    }
}

static void usage(const char * argv0) {
    std::fprintf(stderr,
        "usage: %s -m MODEL.gguf --ids 1,2,3 --out FILE.npy [--threads N] [--f16] [--verbose]\n"
        "  evaluates the ids as one sequence in one batch and writes the logits of every\n"
        "  position as a .npy array [n_ids, n_vocab] (float32, or float16 with --f16)\n",
        argv0);
}

static bool parse_ids(const std::string & s, std::vector<llama_token> & out) {
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && (s[i] == ' ' || s[i] == '[' || s[i] == ']' || s[i] == '\n')) {
            i++;
        }
        if (i >= s.size()) {
            break;
        }
        const char * begin = s.c_str() + i;
        char * end = nullptr;
        errno = 0;
        const long v = std::strtol(begin, &end, 10);
        if (end == begin || errno != 0 || v < 0 || v > INT32_MAX) {
            return false;
        }
        out.push_back((llama_token) v);
        i = (size_t) (end - s.c_str());
        while (i < s.size() && (s[i] == ' ' || s[i] == ']' || s[i] == '\n')) {
            i++;
        }
        if (i < s.size()) {
            if (s[i] != ',') {
                return false;
            }
            i++;
        }
    }
    return !out.empty();
}

// IEEE 754 binary32 -> binary16, round to nearest even, with subnormals, overflow to inf, NaN kept.
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) { // inf or nan
        return (uint16_t) (sign | 0x7c00u | (absx > 0x7f800000u ? 0x0200u : 0u));
    }
    if (absx >= 0x477ff000u) { // rounds to >= 65520 -> inf
        return (uint16_t) (sign | 0x7c00u);
    }
    if (absx < 0x38800000u) { // below the smallest normal half (2^-14): subnormal or zero
        // value = absx as float; half subnormal unit = 2^-24
        float a;
        std::memcpy(&a, &absx, 4);
        const float scaled = a * 16777216.0f; // exact: multiply by 2^24
        // round half to even (nearbyint uses the current rounding mode, which is to-nearest-even)
        const uint32_t m = (uint32_t) std::nearbyint(scaled);
        return (uint16_t) (sign | m); // m == 0x400 correctly becomes the smallest normal
    }
    // normal: rebias exponent 127 -> 15, keep 10 mantissa bits, round to nearest even
    uint32_t h = ((absx >> 13) - ((127u - 15u) << 10));
    const uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) {
        h += 1; // may carry into the exponent, which is correct (and < inf by the check above)
    }
    return (uint16_t) (sign | h);
}

static bool write_npy(const std::string & path, const std::vector<float> & data, int64_t rows, int64_t cols, bool f16) {
    std::string header = "{'descr': '";
    header += f16 ? "<f2" : "<f4";
    header += "', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " + std::to_string(cols) + "), }";
    // magic(6) + version(2) + header_len(2) + header + padding + '\n' must be a multiple of 64
    const size_t pre = 10;
    size_t total = pre + header.size() + 1;
    const size_t pad = (64 - total % 64) % 64;
    header.append(pad, ' ');
    header += '\n';
    if (header.size() > 65535) {
        return false;
    }
    const std::string tmp = path + ".tmp";
    FILE * fp = std::fopen(tmp.c_str(), "wb");
    if (!fp) {
        std::fprintf(stderr, "error: cannot open %s for writing: %s\n", tmp.c_str(), std::strerror(errno));
        return false;
    }
    const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    const uint16_t hlen = (uint16_t) header.size();
    const unsigned char hl[2] = {(unsigned char) (hlen & 0xff), (unsigned char) (hlen >> 8)};
    bool ok = std::fwrite(magic, 1, 8, fp) == 8 && std::fwrite(hl, 1, 2, fp) == 2 &&
              std::fwrite(header.data(), 1, header.size(), fp) == header.size();
    if (ok) {
        if (f16) {
            std::vector<uint16_t> h(data.size());
            for (size_t i = 0; i < data.size(); i++) {
                h[i] = f32_to_f16(data[i]);
            }
            // .npy data is little-endian; this program assumes a little-endian host (x86-64, aarch64)
            ok = std::fwrite(h.data(), 2, h.size(), fp) == h.size();
        } else {
            ok = std::fwrite(data.data(), 4, data.size(), fp) == data.size();
        }
    }
    ok = (std::fclose(fp) == 0) && ok;
    if (!ok) {
        std::fprintf(stderr, "error: failed writing %s\n", tmp.c_str());
        std::remove(tmp.c_str());
        return false;
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::fprintf(stderr, "error: cannot rename %s to %s: %s\n", tmp.c_str(), path.c_str(), std::strerror(errno));
        return false;
    }
    return true;
}

int main(int argc, char ** argv) {
    std::string model_path;
    std::string ids_arg;
    std::string out_path;
    int n_threads = 2;
    bool f16 = false;

    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        auto next = [&](const char * name) -> const char * {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "error: %s needs a value\n", name);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "-m" || a == "--model") {
            model_path = next("-m");
        } else if (a == "--ids") {
            ids_arg = next("--ids");
        } else if (a == "--out" || a == "-o") {
            out_path = next("--out");
        } else if (a == "--threads" || a == "-t") {
            n_threads = std::atoi(next("--threads"));
        } else if (a == "--f16") {
            f16 = true;
        } else if (a == "--verbose" || a == "-v") {
            g_verbose = true;
        } else if (a == "-h" || a == "--help") {
            usage(argv[0]);
            return 0;
        } else {
            std::fprintf(stderr, "error: unknown argument '%s'\n", a.c_str());
            usage(argv[0]);
            return 2;
        }
    }
    if (model_path.empty() || ids_arg.empty() || out_path.empty() || n_threads <= 0) {
        usage(argv[0]);
        return 2;
    }

    std::vector<llama_token> ids;
    if (!parse_ids(ids_arg, ids)) {
        std::fprintf(stderr, "error: --ids must be a comma-separated list of non-negative integers\n");
        return 2;
    }
    const int32_t n_ids = (int32_t) ids.size();

    llama_log_set(log_cb, nullptr);
    llama_backend_init();

    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = 0; // CPU reference
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mparams);
    if (!model) {
        std::fprintf(stderr, "error: cannot load model %s\n", model_path.c_str());
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    for (int32_t j = 0; j < n_ids; j++) {
        if (ids[j] >= n_vocab) {
            std::fprintf(stderr, "error: id %d at index %d is out of range (n_vocab %d)\n", ids[j], j, n_vocab);
            llama_model_free(model);
            return 2;
        }
    }

    // defaults kept (flash_attn_type AUTO, type_k/type_v F16); only sizes and threads are set.
    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = (uint32_t) n_ids;
    cparams.n_batch = (uint32_t) n_ids;
    cparams.n_ubatch = (uint32_t) n_ids;
    cparams.n_seq_max = 1;
    cparams.n_threads = n_threads;
    cparams.n_threads_batch = n_threads;
    llama_context * ctx = llama_init_from_model(model, cparams);
    if (!ctx) {
        std::fprintf(stderr, "error: cannot create context\n");
        llama_model_free(model);
        return 1;
    }
    if ((int32_t) llama_n_ctx(ctx) < n_ids || (int32_t) llama_n_batch(ctx) < n_ids || (int32_t) llama_n_ubatch(ctx) < n_ids) {
        std::fprintf(stderr, "error: context too small: n_ctx %u n_batch %u n_ubatch %u for %d ids\n",
                     llama_n_ctx(ctx), llama_n_batch(ctx), llama_n_ubatch(ctx), n_ids);
        return 1;
    }

    llama_batch batch = llama_batch_init(n_ids, 0, 1);
    for (int32_t j = 0; j < n_ids; j++) {
        batch.token[j] = ids[j];
        batch.pos[j] = j;
        batch.n_seq_id[j] = 1;
        batch.seq_id[j][0] = 0;
        batch.logits[j] = 1;
    }
    batch.n_tokens = n_ids;

    const int32_t rc = llama_decode(ctx, batch);
    if (rc != 0) {
        std::fprintf(stderr, "error: llama_decode returned %d\n", rc);
        llama_batch_free(batch);
        llama_free(ctx);
        llama_model_free(model);
        return 1;
    }

    std::vector<float> out((size_t) n_ids * (size_t) n_vocab);
    for (int32_t j = 0; j < n_ids; j++) {
        const float * row = llama_get_logits_ith(ctx, j);
        if (!row) {
            std::fprintf(stderr, "error: no logits for position %d\n", j);
            return 1;
        }
        std::memcpy(out.data() + (size_t) j * n_vocab, row, sizeof(float) * (size_t) n_vocab);
    }

    const bool ok = write_npy(out_path, out, n_ids, n_vocab, f16);

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();

    if (!ok) {
        return 1;
    }
    std::fprintf(stderr, "llama-logits: wrote %s [%d, %d] %s, threads %d\n", out_path.c_str(), n_ids, n_vocab,
                 f16 ? "float16" : "float32", n_threads);
    return 0;
}
