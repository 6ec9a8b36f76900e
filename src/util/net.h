// Small networking helpers.
#pragma once

namespace deepthin {

// A TCP port on the loopback interface that was free a moment ago (bind to port 0, read it back,
// close). Another process may take it in between; callers that bind it later report that clearly.
int free_tcp_port();

}  // namespace deepthin
