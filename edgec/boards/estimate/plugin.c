/* edgec block counter: a qemu 7.2 user-mode TCG plugin that counts executions of every
 * translated block and writes, at exit, each executed block's guest address, count and
 * instruction bytes.
 *
 * Built by edgec with `gcc -shared -fPIC` on first use. Debian 12's qemu 7.2 ships no
 * qemu-plugin.h, so the few API functions used are declared here, as in that header
 * (plugin API version 1; qemu 7.2 refuses 2 and up).
 *
 * Arguments: out=PATH (required); each=1 also writes the counts of every START..STOP segment
 * to PATH.N (N = 0, 1, ...) at its STOP, for a guest that counts several kernels in one run. The guest brackets the work to count with marker
 * syscalls, lseek(-1, MARK_x, 0): they fail with EBADF in the guest and cost nothing, and
 * the plugin sees their arguments. Counts are zeroed at START and frozen at STOP; between
 * them, what runs from PAUSE to RESUME is left out (the guest's own bookkeeping). Without
 * markers the whole run is written.
 *
 * Counting uses inline adds (no callback per block), which qemu 7.2 does not make atomic:
 * run the guest with one thread.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                             uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                             uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define MARK_START 0x4544474543000001ULL /* "EDGEC" + 1 */
#define MARK_STOP 0x4544474543000002ULL
#define MARK_PAUSE 0x4544474543000003ULL
#define MARK_RESUME 0x4544474543000004ULL
#define CHUNK 65536

/* One record per translation. Records live in fixed chunks that never move, because each
 * translated block holds a pointer to its own counter. */
struct block {
    uint64_t vaddr;
    uint64_t count;  /* incremented inline by the translated code */
    uint64_t kept;   /* counted before the last pause */
    uint64_t frozen; /* total at the stop marker */
    uint32_t n_insns, n_bytes;
    uint8_t *bytes;
    uint8_t *sizes; /* length of each instruction (variable on x86) */
};

static struct block **chunks;
static size_t n_chunks, n_blocks;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *out_path;
static int started, stopped, each, segments;
static void write_to(const char *path);

static struct block *new_block(void)
{
    if (n_blocks == n_chunks * CHUNK) {
        chunks = realloc(chunks, (n_chunks + 1) * sizeof(*chunks));
        chunks[n_chunks++] = calloc(CHUNK, sizeof(struct block));
    }
    struct block *b = &chunks[n_blocks / CHUNK][n_blocks % CHUNK];
    n_blocks++;
    return b;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb), total = 0;
    for (size_t i = 0; i < n; i++) {
        total += qemu_plugin_insn_size(qemu_plugin_tb_get_insn(tb, i));
    }
    pthread_mutex_lock(&lock);
    struct block *b = new_block();
    pthread_mutex_unlock(&lock);
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->n_insns = n;
    b->n_bytes = total;
    b->bytes = malloc(total ? total : 1);
    b->sizes = malloc(n ? n : 1);
    for (size_t i = 0, at = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        size_t size = qemu_plugin_insn_size(insn);
        memcpy(b->bytes + at, qemu_plugin_insn_data(insn), size);
        b->sizes[i] = size;
        at += size;
    }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (a2 < MARK_START || a2 > MARK_RESUME) {
        return;
    }
    /* Blocks translated while paused start counting at once: RESUME zeroes them too. */
    for (size_t i = 0; i < n_blocks; i++) {
        struct block *b = &chunks[i / CHUNK][i % CHUNK];
        if (a2 == MARK_START) {
            b->count = b->kept = 0;
        } else if (a2 == MARK_PAUSE) {
            b->kept += b->count;
        } else if (a2 == MARK_RESUME) {
            b->count = 0;
        } else {
            b->frozen = b->kept + b->count;
        }
    }
    started |= a2 == MARK_START;
    stopped |= a2 == MARK_STOP;
    if (each && a2 == MARK_STOP) {
        char path[4096];
        snprintf(path, sizeof(path), "%s.%d", out_path, segments++);
        write_to(path);
    }
}

/* Text output, one executed block per line: "vaddr count insns" then the instruction bytes
 * in hex with '.' between instructions. */
static void write_counts(qemu_plugin_id_t id, void *userdata)
{
    write_to(out_path);
}

static void write_to(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        qemu_plugin_outs("edgec block counter: cannot open the output file\n");
        return;
    }
    fprintf(f, "# edgec-blocks 1 markers=%d\n", started && stopped);
    for (size_t i = 0; i < n_blocks; i++) {
        struct block *b = &chunks[i / CHUNK][i % CHUNK];
        uint64_t count = (started && stopped) ? b->frozen : b->count;
        if (!count) {
            continue;
        }
        fprintf(f, "%llx %llu %u ", (unsigned long long)b->vaddr, (unsigned long long)count,
                b->n_insns);
        for (uint32_t k = 0, at = 0; k < b->n_insns; k++) {
            for (uint32_t j = 0; j < b->sizes[k]; j++, at++) {
                fprintf(f, "%02x", b->bytes[at]);
            }
            if (k + 1 < b->n_insns) {
                fputc('.', f);
            }
        }
        fputc('\n', f);
    }
    fclose(f);
}

__attribute__((visibility("default"))) int
qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = strdup(argv[i] + 4);
        } else if (strcmp(argv[i], "each=1") == 0) {
            each = 1;
        }
    }
    if (!out_path) {
        qemu_plugin_outs("edgec block counter: needs out=PATH\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, write_counts, NULL);
    return 0;
}
