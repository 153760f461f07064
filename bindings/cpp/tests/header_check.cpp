// header_check.cpp: kestrel.hpp alone, first include, under stricter warnings than the suite
// (-Wshadow -Wconversion -Wsign-conversion -Wold-style-cast), instantiating its templates.
#include <kestrel.hpp>

#include <string>
#include <vector>

namespace {

[[maybe_unused]] void instantiate(kestrel::Options& options, kestrel::Request& req, kestrel::Response& res) {
    options.handler([](kestrel::Request&, kestrel::Response& r) { r.send_static("x"); });
    req.read_async(nullptr, 0, [](kestrel_result, std::size_t) {});
    req.read_all_async([](kestrel_result, std::string) {});
    req.on_abort([] {});
    res.on_writable([](kestrel_result) {});
    res.send_owned(std::string("x"));
    res.send_owned(std::vector<unsigned char>{1, 2});
    res.send_owned(std::string_view("x"), [] {});
}

}  // namespace
