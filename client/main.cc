// drfm: the command-line client of a drfm server (API.md, "CLI: drfm"). Everything but the
// process's streams lives in client/cli.h.
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "client/cli.h"

int main(int argc, char** argv) {
  drfm::client::CliEnv env;
  env.out = &std::cout;
  env.err = &std::cerr;
  env.out_is_terminal = isatty(STDOUT_FILENO) == 1;
  env.err_is_terminal = isatty(STDERR_FILENO) == 1;
  env.handle_interrupts = true;
  const std::vector<std::string> args(argv + 1, argv + argc);
  const int status = drfm::client::RunCli(args, env);
  std::cout.flush();
  return status;
}
