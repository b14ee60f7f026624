/*
 * crc32c(): known answers, and the SSE 4.2 path of x86_64 hosts (patch
 * "util/crc32c: use the crc32 instruction of SSE 4.2 where the host has
 * it") against the table it stands in for.
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/crc32c.h"
#include "qemu/units.h"
#include "host/cpuinfo.h"

/* x86 hosts (host/include/x86_64/host/crc32c.c.inc) */
#ifdef CPUINFO_SSE4_2
#define HAVE_SSE42_PATH
#endif

/* crc32c(0xffffffff, ...) of whole buffers, from RFC 3720 B.4 */
static void test_known_answers(void)
{
    uint8_t buf[32];
    int i;

    memset(buf, 0, sizeof(buf));
    g_assert_cmphex(crc32c(0xffffffff, buf, 32), ==, 0x8a9136aa);
    memset(buf, 0xff, sizeof(buf));
    g_assert_cmphex(crc32c(0xffffffff, buf, 32), ==, 0x62a8ab43);
    for (i = 0; i < 32; i++) {
        buf[i] = i;
    }
    g_assert_cmphex(crc32c(0xffffffff, buf, 32), ==, 0x46dd794e);
    for (i = 0; i < 32; i++) {
        buf[i] = 31 - i;
    }
    g_assert_cmphex(crc32c(0xffffffff, buf, 32), ==, 0x113fdb5c);
    g_assert_cmphex(crc32c(0xffffffff, (const uint8_t *)"123456789", 9), ==,
                    0xe3069283);
    g_assert_cmphex(crc32c(0xffffffff, buf, 0), ==, 0);
}

/* Chained calls, as iov_crc32c() and the VHDX log make them */
static void test_chained(void)
{
    const uint8_t *s = (const uint8_t *)"123456789";
    uint32_t crc = crc32c(0xffffffff, s, 4) ^ 0xffffffff;

    g_assert_cmphex(crc32c(crc, s + 4, 5), ==, 0xe3069283);
}

#ifdef HAVE_SSE42_PATH
static uint32_t crc32c_by_table(uint32_t crc, const uint8_t *data,
                                unsigned int length)
{
    unsigned saved = cpuinfo;
    uint32_t ret;

    cpuinfo &= ~CPUINFO_SSE4_2;
    ret = crc32c(crc, data, length);
    cpuinfo = saved;
    return ret;
}

/*
 * Every length from 0 to 300 at every alignment of 0 to 8, then random
 * buffers up to 64 KiB: both paths give the same CRC.
 */
static void test_sse42_matches_table(void)
{
    g_autofree uint8_t *buf = g_malloc(64 * KiB + 16);
    GRand *rand = g_rand_new_with_seed(42);
    unsigned int len, align, i;

    if (!(cpuinfo & CPUINFO_SSE4_2)) {
        g_rand_free(rand);
        g_test_skip("host has no SSE 4.2");
        return;
    }
    for (i = 0; i < 64 * KiB + 16; i++) {
        buf[i] = g_rand_int(rand);
    }
    for (len = 0; len <= 300; len++) {
        for (align = 0; align < 9; align++) {
            g_assert_cmphex(crc32c(0xffffffff, buf + align, len), ==,
                            crc32c_by_table(0xffffffff, buf + align, len));
        }
    }
    for (i = 0; i < 200; i++) {
        uint32_t seed = g_rand_int(rand);

        len = g_rand_int_range(rand, 0, 64 * KiB);
        align = g_rand_int_range(rand, 0, 16);
        g_assert_cmphex(crc32c(seed, buf + align, len), ==,
                        crc32c_by_table(seed, buf + align, len));
    }
    g_rand_free(rand);
}
#endif

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/crc32c/known-answers", test_known_answers);
    g_test_add_func("/crc32c/chained", test_chained);
#ifdef HAVE_SSE42_PATH
    g_test_add_func("/crc32c/sse42-matches-table", test_sse42_matches_table);
#endif
    return g_test_run();
}
