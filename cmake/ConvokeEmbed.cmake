# Script mode (cmake -P): turns the file INPUT into a C++ source OUTPUT that
# defines `std::string_view NAMESPACE::FUNCTION() noexcept` returning its
# bytes, so a web page ships inside the binary (no files to install, no
# network). Usage:
#   cmake -DINPUT=page.html -DOUTPUT=page.cpp -DNAMESPACE=ns -DFUNCTION=fn
#         -P ConvokeEmbed.cmake
foreach(var INPUT OUTPUT NAMESPACE FUNCTION)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "ConvokeEmbed.cmake: ${var} is not set")
  endif()
endforeach()
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
# 0xNN, per byte; a line break every 16 bytes keeps compilers' lines short.
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" bytes "${bytes}")
get_filename_component(name "${INPUT}" NAME)
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${name} by cmake/ConvokeEmbed.cmake; do not edit.\n"
  "#include <string_view>\n\n"
  "namespace ${NAMESPACE} {\n\n"
  "namespace {\nconst unsigned char data[${size} + 1] = {\n${bytes}0};\n} // namespace\n\n"
  "std::string_view ${FUNCTION}() noexcept {\n"
  "  return {reinterpret_cast<const char*>(data), ${size}};\n}\n\n"
  "} // namespace ${NAMESPACE}\n")
# Only a changed file is rewritten: its users are not rebuilt for nothing.
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
