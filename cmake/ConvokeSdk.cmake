# The installed SDK: libconvoke, static (libconvoke.a) and shared
# (libconvoke.so.MAJOR.MINOR), each holding the client and the internal
# libraries it links (common, proto, tls, caf_support), so that a program
# links one library and those internal libraries stay private. Programs in
# this tree keep linking convoke::client and its parts as before.
#
# Consumers: find_package(convoke CONFIG) -> convoke::client (shared; the
# static one with convoke_USE_STATIC_LIBS=ON), or pkg-config convoke. The
# out-of-tree test (tests/sdk/) builds an agent against an installed copy.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
find_package(OpenSSL 3 REQUIRED)

set(_convoke_sdk_parts convoke_client convoke_common convoke_proto convoke_tls convoke_caf_support)
set(_convoke_sdk_objects "")
foreach(part IN LISTS _convoke_sdk_parts)
  list(APPEND _convoke_sdk_objects $<TARGET_OBJECTS:${part}>)
endforeach()

# The public headers need only the standard library and tl::expected
# (convoke/common/error.hpp); no CAF, no protobuf.
set(_convoke_sdk_includes
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/client/include>
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/common/include>
  $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
# What the parts link, besides each other (kept in step with their
# CMakeLists.txt; the out-of-tree test fails if one is missing).
set(_convoke_sdk_deps protobuf::libprotobuf CAF::io CAF::core OpenSSL::SSL OpenSSL::Crypto
    PkgConfig::sodium spdlog::spdlog fmt::fmt Threads::Threads)

add_library(convoke_sdk_shared SHARED ${_convoke_sdk_objects})
add_library(convoke_sdk_static STATIC ${_convoke_sdk_objects})
foreach(t convoke_sdk_shared convoke_sdk_static)
  target_include_directories(${t} INTERFACE ${_convoke_sdk_includes})
  target_link_libraries(${t} PUBLIC tl::expected PRIVATE ${_convoke_sdk_deps})
  target_compile_features(${t} INTERFACE cxx_std_20) # the headers use concepts (requires)
  set_target_properties(${t} PROPERTIES OUTPUT_NAME convoke
    ARCHIVE_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/sdk
    LIBRARY_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/sdk)
endforeach()
# 0.x: every minor release may change the ABI, so the SONAME carries it
# (libconvoke.so.0.1); from 1.0 on, the major alone.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(CONVOKE_SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
else()
  set(CONVOKE_SOVERSION ${PROJECT_VERSION_MAJOR})
endif()
set_target_properties(convoke_sdk_shared PROPERTIES
  VERSION ${PROJECT_VERSION} SOVERSION ${CONVOKE_SOVERSION} EXPORT_NAME client_shared)
set_target_properties(convoke_sdk_static PROPERTIES EXPORT_NAME client_static)
# Only the SDK's own symbols are exported (client/libconvoke.map).
target_link_options(convoke_sdk_shared PRIVATE
  -Wl,--version-script=${PROJECT_SOURCE_DIR}/client/libconvoke.map -Wl,--no-undefined)
set_target_properties(convoke_sdk_shared PROPERTIES
  LINK_DEPENDS ${PROJECT_SOURCE_DIR}/client/libconvoke.map)
# Sanitizer builds (scripts/sanitize): the objects call the sanitizer's
# runtime, which the shared library must then link (convoke_internal is not
# exported, so its flags are repeated here).
if(CONVOKE_SANITIZERS)
  target_link_options(convoke_sdk_shared PRIVATE -fsanitize=${CONVOKE_SANITIZERS})
endif()

if(NOT CONVOKE_INSTALL)
  # A parent project links convoke::client; these are built only on request.
  set_target_properties(convoke_sdk_shared convoke_sdk_static PROPERTIES EXCLUDE_FROM_ALL ON)
  return()
endif()

set(CONVOKE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/convoke)
# Components: libconvoke (the shared library, for programs that use it)
# and dev (headers, static library, CMake package, pkg-config).
install(TARGETS convoke_sdk_shared EXPORT convokeTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT libconvoke NAMELINK_COMPONENT dev)
install(TARGETS convoke_sdk_static EXPORT convokeTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/client/include/convoke
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev FILES_MATCHING PATTERN "*.hpp")
# The two common headers the client's headers include.
install(FILES ${PROJECT_SOURCE_DIR}/common/include/convoke/common/error.hpp
              ${PROJECT_SOURCE_DIR}/common/include/convoke/common/trace_event.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/convoke/common COMPONENT dev)
install(FILES ${PROJECT_BINARY_DIR}/generated/include/convoke/version.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/convoke COMPONENT dev)
install(EXPORT convokeTargets NAMESPACE convoke:: DESTINATION ${CONVOKE_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/convokeConfig.cmake.in
  ${PROJECT_BINARY_DIR}/sdk/convokeConfig.cmake INSTALL_DESTINATION ${CONVOKE_CMAKE_DIR})
# Before 1.0 a minor release may break the API: only the same 0.MINOR is
# compatible.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(_convoke_compat SameMinorVersion)
else()
  set(_convoke_compat SameMajorVersion)
endif()
write_basic_package_version_file(${PROJECT_BINARY_DIR}/sdk/convokeConfigVersion.cmake
  COMPATIBILITY ${_convoke_compat})
install(FILES ${PROJECT_BINARY_DIR}/sdk/convokeConfig.cmake
              ${PROJECT_BINARY_DIR}/sdk/convokeConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/FindCAF.cmake
  DESTINATION ${CONVOKE_CMAKE_DIR} COMPONENT dev)
# pkg-config: the prefix is found from the .pc file's own place, so that
# `cmake --install --prefix DIR` (or DESTDIR) gives a working file.
file(RELATIVE_PATH CONVOKE_PC_TO_PREFIX
  /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" CONVOKE_PC_TO_PREFIX "${CONVOKE_PC_TO_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/convoke.pc.in ${PROJECT_BINARY_DIR}/sdk/convoke.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/sdk/convoke.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
