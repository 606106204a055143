/*
 * fake_nvml.c — a stand-in for libnvidia-ml.so.1 so the REAL pynvml bindings can be tested
 * without a GPU.
 *
 * Built by the test suite (tests/actuate/gpu/fake_nvml/fake_nvml_ctl.py) with
 *   gcc -shared -fPIC -Wl,-soname,libnvidia-ml.so.1 -o libnvidia-ml.so.1 fake_nvml.c
 * and loaded either through LD_LIBRARY_PATH or by pre-loading it by path (glibc then
 * resolves pynvml's CDLL("libnvidia-ml.so.1") to it through the SONAME).
 *
 * Behaviour follows the NVML API reference: functions other than init return
 * NVML_ERROR_UNINITIALIZED before nvmlInit; limits are in milliwatts, energy in millijoules;
 * nvmlDeviceSetPowerManagementLimit outside [min, max] returns NVML_ERROR_INVALID_ARGUMENT;
 * the size-query pattern of the Get*Clocks functions returns NVML_ERROR_INSUFFICIENT_SIZE.
 *
 * State is set by the tests:
 *   - through the exported fake_nvml_* functions (ctypes), or
 *   - through a text state file named by $FAKE_NVML_STATE, read at nvmlInit and rewritten
 *     after each change (so a subprocess sees and leaves the state), tab-separated lines:
 *       gpu <name> <uuid> <min_mw> <max_mw> <default_mw> <limit_mw> <demand_mw> <energy_mj> <lock_min> <lock_max>
 *       error <function name> <nvml return code> <times, -1 = always>
 *   - without either, $FAKE_NVML_GPUS (default 2) identical 100..400 W GPUs exist.
 * Errors are injected per NVML function name; every call is counted per name.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_UNKNOWN = 999,
};

#define MAX_GPUS 256
#define MAX_RULES 64
#define MAX_COUNTERS 64
#define NAME_LEN 96
#define UUID_LEN 96

typedef struct fake_gpu {
    char name[NAME_LEN];
    char uuid[UUID_LEN];
    unsigned int min_mw, max_mw, default_mw, limit_mw;
    unsigned int demand_mw;            /* power the load would draw without a cap */
    unsigned long long energy_mj;
    unsigned int lock_min_mhz, lock_max_mhz; /* 0/0 = not locked */
} fake_gpu;

static const unsigned int MEM_CLOCKS[] = {1215, 405};
static const unsigned int GFX_CLOCKS_HI[] = {1410, 1395, 1380, 1200, 1005, 810, 615, 420, 210};
static const unsigned int GFX_CLOCKS_LO[] = {405, 210};

static fake_gpu gpus[MAX_GPUS];
static unsigned int gpu_count = 0;
static int configured = 0;   /* set by a setter or a state file; else defaults at init */
static int init_refcount = 0;

typedef struct { char fn[80]; int code; int times; } rule_t;
static rule_t rules[MAX_RULES];
static int n_rules = 0;

typedef struct { char fn[80]; long count; } counter_t;
static counter_t counters[MAX_COUNTERS];
static int n_counters = 0;

static void count_call(const char *fn) {
    for (int i = 0; i < n_counters; i++)
        if (strcmp(counters[i].fn, fn) == 0) { counters[i].count++; return; }
    if (n_counters < MAX_COUNTERS) {
        snprintf(counters[n_counters].fn, sizeof counters[0].fn, "%s", fn);
        counters[n_counters++].count = 1;
    }
}

static int injected(const char *fn) {
    for (int i = 0; i < n_rules; i++) {
        if (strcmp(rules[i].fn, fn) != 0 || rules[i].times == 0) continue;
        if (rules[i].times > 0) rules[i].times--;
        return rules[i].code;
    }
    return NVML_SUCCESS;
}

static void set_default_gpu(unsigned int i) {
    fake_gpu *g = &gpus[i];
    memset(g, 0, sizeof *g);
    snprintf(g->name, NAME_LEN, "NVIDIA A100-SXM4-40GB");
    snprintf(g->uuid, UUID_LEN, "GPU-fa4e0000-0000-4000-8000-%012x", i);
    g->min_mw = 100000; g->max_mw = 400000; g->default_mw = 400000; g->limit_mw = 400000;
    g->demand_mw = 250000; g->energy_mj = 1000000ULL * (i + 1);
}

static void set_defaults(void) {
    const char *env = getenv("FAKE_NVML_GPUS");
    unsigned int n = env ? (unsigned int)strtoul(env, NULL, 10) : 2;
    if (n > MAX_GPUS) n = MAX_GPUS;
    gpu_count = n;
    for (unsigned int i = 0; i < n; i++) set_default_gpu(i);
}

/* ---------- state file ---------- */

int fake_nvml_load(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    gpu_count = 0; n_rules = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        char *save = NULL;
        char *kind = strtok_r(line, "\t", &save);
        if (!kind) continue;
        if (strcmp(kind, "gpu") == 0 && gpu_count < MAX_GPUS) {
            char *fields[10];
            int k = 0;
            for (; k < 10; k++) if (!(fields[k] = strtok_r(NULL, "\t", &save))) break;
            if (k < 10) continue;
            fake_gpu *g = &gpus[gpu_count++];
            memset(g, 0, sizeof *g);
            snprintf(g->name, NAME_LEN, "%s", fields[0]);
            snprintf(g->uuid, UUID_LEN, "%s", fields[1]);
            g->min_mw = (unsigned int)strtoul(fields[2], NULL, 10);
            g->max_mw = (unsigned int)strtoul(fields[3], NULL, 10);
            g->default_mw = (unsigned int)strtoul(fields[4], NULL, 10);
            g->limit_mw = (unsigned int)strtoul(fields[5], NULL, 10);
            g->demand_mw = (unsigned int)strtoul(fields[6], NULL, 10);
            g->energy_mj = strtoull(fields[7], NULL, 10);
            g->lock_min_mhz = (unsigned int)strtoul(fields[8], NULL, 10);
            g->lock_max_mhz = (unsigned int)strtoul(fields[9], NULL, 10);
        } else if (strcmp(kind, "error") == 0 && n_rules < MAX_RULES) {
            char *fn = strtok_r(NULL, "\t", &save);
            char *code = strtok_r(NULL, "\t", &save);
            char *times = strtok_r(NULL, "\t", &save);
            if (!fn || !code || !times) continue;
            snprintf(rules[n_rules].fn, sizeof rules[0].fn, "%s", fn);
            rules[n_rules].code = atoi(code);
            rules[n_rules].times = atoi(times);
            n_rules++;
        }
    }
    fclose(f);
    configured = 1;
    return 0;
}

int fake_nvml_save(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    for (unsigned int i = 0; i < gpu_count; i++) {
        fake_gpu *g = &gpus[i];
        fprintf(f, "gpu\t%s\t%s\t%u\t%u\t%u\t%u\t%u\t%llu\t%u\t%u\n", g->name, g->uuid, g->min_mw,
                g->max_mw, g->default_mw, g->limit_mw, g->demand_mw, g->energy_mj,
                g->lock_min_mhz, g->lock_max_mhz);
    }
    for (int i = 0; i < n_rules; i++)
        if (rules[i].times != 0)
            fprintf(f, "error\t%s\t%d\t%d\n", rules[i].fn, rules[i].code, rules[i].times);
    fclose(f);
    return 0;
}

static void persist(void) {
    const char *path = getenv("FAKE_NVML_STATE");
    if (path && *path) fake_nvml_save(path);
}

/* ---------- setters / getters for the tests (ctypes) ---------- */

void fake_nvml_reset(unsigned int count) {
    if (count > MAX_GPUS) count = MAX_GPUS;
    gpu_count = count;
    for (unsigned int i = 0; i < count; i++) set_default_gpu(i);
    n_rules = 0; n_counters = 0; configured = 1;
}

int fake_nvml_set_gpu(unsigned int i, const char *name, const char *uuid, unsigned int min_mw,
                      unsigned int max_mw, unsigned int default_mw, unsigned int limit_mw,
                      unsigned int demand_mw, unsigned long long energy_mj) {
    if (i >= gpu_count) return -1;
    fake_gpu *g = &gpus[i];
    snprintf(g->name, NAME_LEN, "%s", name);
    snprintf(g->uuid, UUID_LEN, "%s", uuid);
    g->min_mw = min_mw; g->max_mw = max_mw; g->default_mw = default_mw; g->limit_mw = limit_mw;
    g->demand_mw = demand_mw; g->energy_mj = energy_mj;
    return 0;
}

int fake_nvml_set_energy_mj(unsigned int i, unsigned long long energy_mj) {
    if (i >= gpu_count) return -1;
    gpus[i].energy_mj = energy_mj;
    return 0;
}

int fake_nvml_inject(const char *fn, int code, int times) {
    for (int i = 0; i < n_rules; i++)
        if (strcmp(rules[i].fn, fn) == 0) { rules[i].code = code; rules[i].times = times; return 0; }
    if (n_rules >= MAX_RULES) return -1;
    snprintf(rules[n_rules].fn, sizeof rules[0].fn, "%s", fn);
    rules[n_rules].code = code; rules[n_rules].times = times;
    n_rules++;
    return 0;
}

void fake_nvml_clear_errors(void) { n_rules = 0; }

long fake_nvml_calls(const char *fn) {
    for (int i = 0; i < n_counters; i++)
        if (strcmp(counters[i].fn, fn) == 0) return counters[i].count;
    return 0;
}

void fake_nvml_reset_calls(void) { n_counters = 0; }

unsigned int fake_nvml_limit_mw(unsigned int i) { return i < gpu_count ? gpus[i].limit_mw : 0; }

int fake_nvml_locked_clocks(unsigned int i, unsigned int *min_mhz, unsigned int *max_mhz) {
    if (i >= gpu_count) return -1;
    *min_mhz = gpus[i].lock_min_mhz; *max_mhz = gpus[i].lock_max_mhz;
    return 0;
}

int fake_nvml_init_refcount(void) { return init_refcount; }

/* ---------- NVML API ---------- */

#define ENTER(fnname)                                             \
    count_call(fnname);                                           \
    do { int _e = injected(fnname); if (_e) return _e; } while (0)

#define NEED_INIT() do { if (init_refcount <= 0) return NVML_ERROR_UNINITIALIZED; } while (0)

#define DEVICE(dev, g)                                                          \
    fake_gpu *g = (fake_gpu *)(dev);                                            \
    if (g == NULL || g < gpus || g >= gpus + gpu_count) return NVML_ERROR_INVALID_ARGUMENT

typedef fake_gpu *nvmlDevice_t;

static nvmlReturn_t do_init(void) {
    if (init_refcount == 0) {
        const char *path = getenv("FAKE_NVML_STATE");
        if (!(path && *path && fake_nvml_load(path) == 0) && !configured) {
            set_defaults();
            configured = 1;
        }
    }
    init_refcount++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    ENTER("nvmlInitWithFlags");
    return do_init();
}

nvmlReturn_t nvmlInit_v2(void) { ENTER("nvmlInit_v2"); return do_init(); }
nvmlReturn_t nvmlInit(void) { ENTER("nvmlInit"); return do_init(); }

nvmlReturn_t nvmlShutdown(void) {
    ENTER("nvmlShutdown");
    NEED_INIT();
    init_refcount--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER("nvmlSystemGetDriverVersion");
    NEED_INIT();
    const char *v = "550.54.15-fake";
    if (length < strlen(v) + 1) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(version, length, "%s", v);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    ENTER("nvmlDeviceGetCount_v2");
    NEED_INIT();
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = gpu_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    ENTER("nvmlDeviceGetHandleByIndex_v2");
    NEED_INIT();
    if (!device || index >= gpu_count) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &gpus[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    ENTER("nvmlDeviceGetName");
    NEED_INIT();
    DEVICE(device, g);
    if (!name || length < strlen(g->name) + 1) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(name, length, "%s", g->name);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    ENTER("nvmlDeviceGetUUID");
    NEED_INIT();
    DEVICE(device, g);
    if (!uuid || length < strlen(g->uuid) + 1) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(uuid, length, "%s", g->uuid);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device,
                                                          unsigned int *min_mw,
                                                          unsigned int *max_mw) {
    ENTER("nvmlDeviceGetPowerManagementLimitConstraints");
    NEED_INIT();
    DEVICE(device, g);
    if (!min_mw || !max_mw) return NVML_ERROR_INVALID_ARGUMENT;
    *min_mw = g->min_mw; *max_mw = g->max_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t device, unsigned int *mw) {
    ENTER("nvmlDeviceGetPowerManagementDefaultLimit");
    NEED_INIT();
    DEVICE(device, g);
    if (!mw) return NVML_ERROR_INVALID_ARGUMENT;
    *mw = g->default_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *mw) {
    ENTER("nvmlDeviceGetPowerManagementLimit");
    NEED_INIT();
    DEVICE(device, g);
    if (!mw) return NVML_ERROR_INVALID_ARGUMENT;
    *mw = g->limit_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t device, unsigned int mw) {
    ENTER("nvmlDeviceSetPowerManagementLimit");
    NEED_INIT();
    DEVICE(device, g);
    if (mw < g->min_mw || mw > g->max_mw) return NVML_ERROR_INVALID_ARGUMENT;
    g->limit_mw = mw;
    persist();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *mw) {
    ENTER("nvmlDeviceGetPowerUsage");
    NEED_INIT();
    DEVICE(device, g);
    if (!mw) return NVML_ERROR_INVALID_ARGUMENT;
    *mw = g->demand_mw < g->limit_mw ? g->demand_mw : g->limit_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *mj) {
    ENTER("nvmlDeviceGetTotalEnergyConsumption");
    NEED_INIT();
    DEVICE(device, g);
    if (!mj) return NVML_ERROR_INVALID_ARGUMENT;
    *mj = g->energy_mj;
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_clocks(const unsigned int *src, unsigned int n, unsigned int *count,
                                unsigned int *out) {
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (out == NULL || *count < n) { *count = n; return NVML_ERROR_INSUFFICIENT_SIZE; }
    for (unsigned int i = 0; i < n; i++) out[i] = src[i];
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetSupportedMemoryClocks(nvmlDevice_t device, unsigned int *count,
                                                unsigned int *clocks_mhz) {
    ENTER("nvmlDeviceGetSupportedMemoryClocks");
    NEED_INIT();
    DEVICE(device, g);
    (void)g;
    return copy_clocks(MEM_CLOCKS, sizeof MEM_CLOCKS / sizeof MEM_CLOCKS[0], count, clocks_mhz);
}

nvmlReturn_t nvmlDeviceGetSupportedGraphicsClocks(nvmlDevice_t device, unsigned int mem_mhz,
                                                  unsigned int *count, unsigned int *clocks_mhz) {
    ENTER("nvmlDeviceGetSupportedGraphicsClocks");
    NEED_INIT();
    DEVICE(device, g);
    (void)g;
    if (mem_mhz == MEM_CLOCKS[0])
        return copy_clocks(GFX_CLOCKS_HI, sizeof GFX_CLOCKS_HI / sizeof GFX_CLOCKS_HI[0], count,
                           clocks_mhz);
    if (mem_mhz == MEM_CLOCKS[1])
        return copy_clocks(GFX_CLOCKS_LO, sizeof GFX_CLOCKS_LO / sizeof GFX_CLOCKS_LO[0], count,
                           clocks_mhz);
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceSetGpuLockedClocks(nvmlDevice_t device, unsigned int min_mhz,
                                          unsigned int max_mhz) {
    ENTER("nvmlDeviceSetGpuLockedClocks");
    NEED_INIT();
    DEVICE(device, g);
    if (min_mhz > max_mhz) return NVML_ERROR_INVALID_ARGUMENT;
    g->lock_min_mhz = min_mhz; g->lock_max_mhz = max_mhz;
    persist();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceResetGpuLockedClocks(nvmlDevice_t device) {
    ENTER("nvmlDeviceResetGpuLockedClocks");
    NEED_INIT();
    DEVICE(device, g);
    g->lock_min_mhz = 0; g->lock_max_mhz = 0;
    persist();
    return NVML_SUCCESS;
}
