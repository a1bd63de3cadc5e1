/*
 * mobilekit's instruction counter: a qemu TCG plugin (qemu-plugin.h, API version 1, qemu 7.2).
 *
 * Counts the guest instructions executed between two marker system calls and appends each count to
 * a file, one decimal number per line.
 *
 * Marker protocol (the guest side is mobilekit/converters/arm_guest.py):
 *   syscall getpid (aarch64 number 172) with x0 = MARKER_MAGIC and x1 = MARKER_START or MARKER_STOP.
 *   getpid ignores its arguments, so a marker is harmless without the plugin. START remembers the
 *   running total; STOP appends "total - remembered" to the file named by the plugin argument
 *   out=PATH. Every executed translation block adds its instruction count inline (no callback), so
 *   the count is exact for one guest thread; run the guest single-threaded.
 *
 * Build: gcc -shared -fPIC -O2 -I DIR_WITH_qemu-plugin.h -o libmkcount.so arm_count_plugin.c
 * Use:   qemu-aarch64 -plugin ./libmkcount.so,out=counts.txt ...
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define AARCH64_GETPID 172
#define MARKER_MAGIC UINT64_C(0x6d6b6974636f756e) /* "mkitcoun" */
#define MARKER_START 1
#define MARKER_STOP 2

static uint64_t executed;
static uint64_t started_at;
static FILE *out;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num != AARCH64_GETPID || a1 != MARKER_MAGIC) {
        return;
    }
    if (a2 == MARKER_START) {
        started_at = executed;
    } else if (a2 == MARKER_STOP) {
        fprintf(out, "%" PRIu64 "\n", executed - started_at);
        fflush(out);
    }
}

static void on_exit_guest(qemu_plugin_id_t id, void *userdata)
{
    fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        }
    }
    if (path == NULL || strcmp(info->target_name, "aarch64") != 0) {
        fprintf(stderr, "mkcount: needs out=PATH and an aarch64 guest\n");
        return 1;
    }
    out = fopen(path, "w");
    if (out == NULL) {
        perror(path);
        return 1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_exit_guest, NULL);
    return 0;
}
