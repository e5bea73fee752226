# Debian packages with CPack (docs/deploy.md says why three):
#   convoke-server   the server, the convoke CLI, the systemd unit,
#                    /etc/convoke/convoke-server.toml (a conffile), logrotate,
#                    a `convoke` system user created in postinst
#   libconvoke0.1    the shared SDK library (libconvoke.so.0.1)
#   libconvoke-dev   headers, static library, CMake package, pkg-config
# Build them from any build tree: `cpack --config build/CPackConfig.cmake`
# (scripts/deb-check also lints and installs them). The package is installed
# with prefix /usr into a staging DESTDIR, so the unit and configuration
# land in /lib/systemd/system and /etc whatever prefix the build has.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME convoke)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "Convoke")
set(CPACK_PACKAGE_CONTACT "Convoke maintainers <maintainers@users.noreply.b-seed-e878fbb8.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL server libconvoke dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "")
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)

set(_deb_version "${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}")
set(CONVOKE_LIB_PACKAGE libconvoke${CONVOKE_SOVERSION})

set(CPACK_DEBIAN_SERVER_PACKAGE_NAME convoke-server)
set(CPACK_DEBIAN_SERVER_PACKAGE_SECTION net)
set(CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_SERVER_PACKAGE_RECOMMENDS "logrotate")
set(CPACK_COMPONENT_SERVER_DESCRIPTION
  "Actor-model message relay for software agents (server)
Convoke relays messages between software agents over TCP (optionally TLS):
direct messages, broadcasts on routes, requests and replies, with flow
control, per-agent credentials and rights, message traces and an admin
HTTP listener (/healthz, /readyz, /metrics).
.
This package contains convoke-server, the convoke command-line client and
operator tool, a systemd unit and a logrotate configuration.")
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_EXTRA
  ${PROJECT_BINARY_DIR}/debian/conffiles
  ${PROJECT_SOURCE_DIR}/deploy/packaging/convoke-server/postinst
  ${PROJECT_SOURCE_DIR}/deploy/packaging/convoke-server/prerm
  ${PROJECT_SOURCE_DIR}/deploy/packaging/convoke-server/postrm)
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_LIBCONVOKE_PACKAGE_NAME ${CONVOKE_LIB_PACKAGE})
set(CPACK_DEBIAN_LIBCONVOKE_PACKAGE_SECTION libs)
# shlibs for programs built against it (CPack's setting is global; only this
# package has a shared library). ldconfig runs from the trigger, not from
# maintainer scripts (which CPack would otherwise write).
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
set(CPACK_DEBIAN_LIBCONVOKE_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/deploy/packaging/libconvoke/triggers
  ${PROJECT_SOURCE_DIR}/deploy/packaging/libconvoke/postinst
  ${PROJECT_SOURCE_DIR}/deploy/packaging/libconvoke/postrm)
set(CPACK_DEBIAN_LIBCONVOKE_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_COMPONENT_LIBCONVOKE_DESCRIPTION
  "Convoke agent SDK (shared library)
The client library with which programs become Convoke agents: connect to a
convoke-server, send and receive messages, requests and replies.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libconvoke-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# What find_package(convoke) and the static library need (the shared
# library's own needs are found by dpkg-shlibdeps).
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "${CONVOKE_LIB_PACKAGE} (= ${_deb_version}), libexpected-dev, libcaf-dev (>= 0.17.6), libcaf-dev (<< 0.18), libprotobuf-dev, libssl-dev, libsodium-dev, libspdlog-dev, libfmt-dev, pkg-config")
set(CPACK_COMPONENT_DEV_DESCRIPTION
  "Convoke agent SDK (development files)
Headers, the static library, the CMake package (find_package(convoke)) and
the pkg-config file (convoke.pc) of the Convoke agent SDK.")

# /usr/share/doc/PACKAGE/{copyright,changelog.Debian.gz} of each package.
file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/debian)
file(WRITE ${PROJECT_BINARY_DIR}/debian/conffiles
  "/etc/convoke/convoke-server.toml\n/etc/logrotate.d/convoke-server\n")
configure_file(${PROJECT_SOURCE_DIR}/deploy/packaging/changelog.Debian.in
  ${PROJECT_BINARY_DIR}/debian/changelog.Debian @ONLY)
find_program(GZIP_PROGRAM gzip REQUIRED)
add_custom_command(OUTPUT ${PROJECT_BINARY_DIR}/debian/changelog.Debian.gz
  COMMAND ${GZIP_PROGRAM} -9nc ${PROJECT_BINARY_DIR}/debian/changelog.Debian
          > ${PROJECT_BINARY_DIR}/debian/changelog.Debian.gz
  DEPENDS ${PROJECT_BINARY_DIR}/debian/changelog.Debian VERBATIM)
# Manual pages, compressed as Debian wants them.
set(_convoke_man_pages "")
foreach(page convoke-server.1 convoke.1)
  add_custom_command(OUTPUT ${PROJECT_BINARY_DIR}/debian/${page}.gz
    COMMAND ${GZIP_PROGRAM} -9nc ${PROJECT_SOURCE_DIR}/deploy/packaging/man/${page}
            > ${PROJECT_BINARY_DIR}/debian/${page}.gz
    DEPENDS ${PROJECT_SOURCE_DIR}/deploy/packaging/man/${page} VERBATIM)
  list(APPEND _convoke_man_pages ${PROJECT_BINARY_DIR}/debian/${page}.gz)
endforeach()
install(FILES ${_convoke_man_pages} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT server)
add_custom_target(convoke_deb_files ALL
  DEPENDS ${PROJECT_BINARY_DIR}/debian/changelog.Debian.gz ${_convoke_man_pages})
foreach(pair server:convoke-server libconvoke:${CONVOKE_LIB_PACKAGE} dev:libconvoke-dev)
  string(REPLACE ":" ";" pair "${pair}")
  list(GET pair 0 component)
  list(GET pair 1 package)
  install(FILES ${PROJECT_SOURCE_DIR}/deploy/packaging/copyright
                ${PROJECT_BINARY_DIR}/debian/changelog.Debian.gz
          DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${package} COMPONENT ${component}
          EXCLUDE_FROM_ALL) # only in the packages (component installs)
endforeach()

include(CPack)
