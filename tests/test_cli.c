/* The cnnkit command-line tool: output and exit codes (0 ok, 1 runtime, 2 usage/model file). */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char out[65536];

Test(cli, summary_of_the_seed_model) {
    int rc = t_run_cli("summary examples/seed_cnn.py", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_neq(strstr(out, "Total params: 597,738"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "Non-trainable params: 1,408"), NULL);
    cr_assert_neq(strstr(out, "warning: examples/seed_cnn.py: line 5"), NULL,
                  "the recovery warning names the line: %s", out);
}

Test(cli, usage_and_model_errors_exit_2) {
    cr_assert_eq(t_run_cli("", out, sizeof out), 2);
    cr_assert_eq(t_run_cli("frobnicate examples/seed_cnn.py", out, sizeof out), 2);
    cr_assert_eq(t_run_cli("train examples/seed_cnn.py --epochs zero", out, sizeof out), 2);
    cr_assert_eq(t_run_cli("summary /nonexistent/model.py", out, sizeof out), 2);
    cr_assert_eq(t_run_cli("evaluate examples/seed_cnn.py", out, sizeof out), 2, "%s", out);
    cr_assert_neq(strstr(out, "--weights"), NULL, "%s", out);
    char tmp[] = "/tmp/cnnkit-cli-XXXXXX";
    int fd = mkstemp(tmp);
    cr_assert_geq(fd, 0);
    const char *bad = "model = Sequential()\nmodel.add(Conv2D(8, (3,3), input_shape=(8,8,1)))\n"
                      "model.add(Frobnicate(3))\n";
    cr_assert_eq(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    char args[256];
    snprintf(args, sizeof args, "summary %s", tmp);
    cr_assert_eq(t_run_cli(args, out, sizeof out), 2, "%s", out);
    cr_assert_neq(strstr(out, "line 3"), NULL, "error does not name the line: %s", out);
    unlink(tmp);
    cr_assert_eq(t_run_cli("--help", out, sizeof out), 0);
}

Test(cli, runtime_errors_exit_1) {
    cr_assert_eq(
        t_run_cli("train examples/seed_cnn.py --data /nonexistent --epochs 1", out, sizeof out), 1,
        "%s", out);
    cr_assert_neq(strstr(out, "/nonexistent"), NULL, "%s", out);
    cr_assert_eq(
        t_run_cli("evaluate examples/seed_cnn.py --weights /nonexistent.ckpt", out, sizeof out), 1,
        "%s", out);
}
