/* testlib.h -- the whole unit-test harness: CHECK macros and a summary line.
 *
 * Each test file defines test functions, calls RUN(test_name) for each from
 * main, and returns TEST_SUMMARY(), which prints "N passed, M failed" (the
 * line CI reads) and yields the exit status. A test passes when none of its
 * CHECKs failed. */
#ifndef HERALD_TESTLIB_H
#define HERALD_TESTLIB_H

#include <stdio.h>
#include <string.h>

static int testlib_passed, testlib_failed, testlib_current_failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);             \
            testlib_current_failed = 1;                                                            \
        }                                                                                          \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long testlib_a = (long long)(a), testlib_b = (long long)(b);                          \
        if (testlib_a != testlib_b) {                                                              \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a,  \
                    testlib_a, #b, testlib_b);                                                     \
            testlib_current_failed = 1;                                                            \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *testlib_a = (a), *testlib_b = (b);                                             \
        if (!testlib_a || !testlib_b || strcmp(testlib_a, testlib_b) != 0) {                       \
            fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a,    \
                    testlib_a ? testlib_a : "(null)", testlib_b ? testlib_b : "(null)");           \
            testlib_current_failed = 1;                                                            \
        }                                                                                          \
    } while (0)

#define RUN(test)                                                                                  \
    do {                                                                                           \
        testlib_current_failed = 0;                                                                \
        test();                                                                                    \
        if (testlib_current_failed) {                                                              \
            testlib_failed++;                                                                      \
            fprintf(stderr, "FAIL %s\n", #test);                                                   \
        } else {                                                                                   \
            testlib_passed++;                                                                      \
        }                                                                                          \
    } while (0)

#define TEST_SUMMARY()                                                                             \
    (printf("%d passed, %d failed\n", testlib_passed, testlib_failed), testlib_failed ? 1 : 0)

#endif
