/* A CUDA device's peak compute and DRAM bandwidth from its attributes (the roofline of the
 * training profile, ck_model_profile). Plain C, no CUDA: context.c queries the attributes. */
#include "internal.h"

#include <string.h>

/* Per SM and clock, by compute capability: FP32 FMA lanes (2 FLOPs each) and dense tensor-core
 * FLOPs for TF32 and BF16 inputs with fp32 accumulation (no sparsity). Estimates derived from
 * NVIDIA's published peaks divided by SMs x boost clock:
 *  - sm_80, A100 (NVIDIA A100 Tensor Core GPU Architecture whitepaper, 2020): 108 SMs, 1410 MHz,
 *    FP32 19.5 TF (64 lanes), TF32 156 TF (1024), BF16 312 TF (2048).
 *  - sm_86, A40 / RTX A6000 (NVIDIA Ampere GA102 GPU Architecture whitepaper): 128 lanes, TF32
 *    512, BF16 1024 (A40: 84 SMs, 1740 MHz, BF16 149.7 TF); GeForce GA102 boards run fp32
 *    accumulation at half that rate, so there this overestimates the tensor peaks 2x.
 *  - sm_89, L40S (NVIDIA Ada GPU Architecture whitepaper; L40S datasheet): 142 SMs, 2520 MHz,
 *    FP32 91.6 TF (128), TF32 183 TF (512), BF16 362 TF (1024); GeForce Ada: as GA102.
 *  - sm_90, H100 SXM (NVIDIA H100 Tensor Core GPU Architecture whitepaper, 2022): 132 SMs,
 *    FP32 67 TF (128 lanes at 1980 MHz), TF32 495 TF (2048) and BF16 989 TF (4096) at the
 *    1830 MHz the whitepaper's tensor figures assume.
 *  - sm_100, B200 (NVIDIA Blackwell datasheet): 148 SMs, FP32 128 lanes, TF32 1.1 PF (4096),
 *    BF16 2.25 PF (8192) dense.
 *  - sm_120, RTX PRO 6000 Blackwell / GeForce RTX 50 (NVIDIA RTX Blackwell GPU Architecture
 *    whitepaper): 128 lanes, TF32 512, BF16 1024 (GeForce: half-rate fp32 accumulation, as
 *    above).
 * The clock the attributes report is the maximum boost clock, which a GPU under load may not
 * hold (H100 SXM: 1980 MHz reported, its tensor peaks quoted at 1830 MHz): the peaks computed
 * here are an upper bound, and a node's "x roofline" a lower bound on how far it is from it. */
typedef struct peak_row {
    int major, minor;
    int fp32_lanes, tf32_flops, bf16_flops;
} peak_row;

static const peak_row k_rows[] = {
    {8, 0, 64, 1024, 2048},  {8, 6, 128, 512, 1024},   {8, 9, 128, 512, 1024},
    {9, 0, 128, 2048, 4096}, {10, 0, 128, 4096, 8192}, {12, 0, 128, 512, 1024},
};

ck_device_peak ck_device_peak_of(int major, int minor, int sms, int clock_khz, int mem_clock_khz,
                                 int bus_bits) {
    ck_device_peak p;
    memset(&p, 0, sizeof p);
    if (sms > 0 && clock_khz > 0) {
        const double per_clock = (double)sms * (double)clock_khz * 1e3; /* SM-cycles per s */
        for (size_t i = 0; i < sizeof k_rows / sizeof k_rows[0]; ++i)
            if (k_rows[i].major == major && k_rows[i].minor == minor) {
                p.fp32_flops = 2.0 * k_rows[i].fp32_lanes * per_clock;
                p.tf32_flops = k_rows[i].tf32_flops * per_clock;
                p.bf16_flops = k_rows[i].bf16_flops * per_clock;
            }
    }
    /* double data rate: the attribute is the memory clock, HBM and GDDR move 2 words per cycle
     * per bus bit as the attribute reports them (H100 SXM: 2619 MHz x 5120 bits -> 3.35 TB/s) */
    if (mem_clock_khz > 0 && bus_bits > 0)
        p.dram_bytes = 2.0 * (double)mem_clock_khz * 1e3 * (double)bus_bits / 8.0;
    return p;
}
