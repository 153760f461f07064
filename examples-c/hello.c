/* hello.c: the shortest useful kestrel program. Serves "Hello, World!" on http://localhost:5000. */
#include <kestrel.h>
#include <stdio.h>

static kestrel_result hello(void *userdata, kestrel_request *req, kestrel_response *res) {
    (void)userdata;
    (void)req;
    static const char body[] = "Hello, World!";
    kestrel_response_add_header(res, (const uint8_t *)"content-type", 12, (const uint8_t *)"text/plain", 10);
    return kestrel_response_send(res, (const uint8_t *)body, sizeof body - 1);
}

int main(void) {
    kestrel_options *options;
    kestrel_server *server;
    kestrel_options_new(&options);
    kestrel_options_set_handler(options, hello, NULL, NULL);
    if (kestrel_server_new(options, &server) != KESTREL_OK || kestrel_server_start(server) != KESTREL_OK) {
        char error[256];
        kestrel_last_error(error, sizeof error, NULL);
        fprintf(stderr, "hello: %s\n", error);
        return 1;
    }
    puts("listening on http://localhost:5000 (press Enter to stop)");
    getchar();
    kestrel_server_stop(server, 5000, NULL);
    kestrel_server_free(server);
    return 0;
}
