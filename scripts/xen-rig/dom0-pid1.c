/*
 * PID 1 of the rig's dom0: runs dom0-init (bash) as its child and reaps every orphan.
 *
 * Why not bash as PID 1: the rig's boots kept ending with bash, as PID 1, calling abort()
 * ("reader_loop: bad jump" once, mostly without a word). abort() ends in `hlt` for PID 1,
 * which ignores SIGABRT: the "general protection fault ... in libc.so.6" at libc+0x50f that
 * every such boot logged is that `hlt`, and the kernel then panicked ("Attempted to kill
 * init"), so the cause was never named. As PID 1, bash was also the parent of every orphan
 * the rig makes (background subshells, `timeout` trees, the stall watchdog's kills). Run as a
 * child, bash still dies now and then (SIGSEGV, in the first runs: the platform's corruption,
 * scripts/xen-rig/README.md "Flakes"), but this process names the signal in a `RIG PLATFORM:`
 * line, which `run` counts as a lost boot, and powers the machine off.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <unistd.h>

static void say(const char *msg)
{
	int fd = open("/dev/console", O_WRONLY | O_NOCTTY);
	if (fd < 0)
		fd = 2;
	dprintf(fd, "RIG PLATFORM: %s\n", msg);
	if (fd != 2)
		close(fd);
}

int main(void)
{
	char msg[256];
	pid_t child = fork();

	if (child < 0) {
		say("pid 1 could not fork dom0-init");
	} else if (child == 0) {
		char *argv[] = { "/bin/bash", "/rig/dom0-init", NULL };
		execv(argv[0], argv);
		_exit(127);
	}
	for (;;) {
		int st;
		pid_t p = waitpid(-1, &st, 0);

		if (p < 0) {
			if (errno == EINTR)
				continue;
			snprintf(msg, sizeof(msg), "pid 1: waitpid: %s", strerror(errno));
			say(msg);
			break;
		}
		if (p != child)
			continue; /* an orphan: reaped, nothing else to do */
		if (WIFSIGNALED(st))
			snprintf(msg, sizeof(msg), "dom0-init (bash) died of signal %d (%s)",
				 WTERMSIG(st), strsignal(WTERMSIG(st)));
		else
			snprintf(msg, sizeof(msg), "dom0-init (bash) exited with status %d before powering off",
				 WEXITSTATUS(st));
		say(msg);
		break;
	}
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}
