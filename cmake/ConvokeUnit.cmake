# Where the server's files go for an installation prefix, and the install
# step for the files whose contents or places depend on it (the systemd
# unit, the configuration, the logrotate snippet). Used at configure time
# (the build tree's unit, checked by tests/deploy/verify_unit.sh) and at
# install time: `cmake --install build --prefix /usr` and the Debian
# package (CPack, which installs with prefix /usr into a staging DESTDIR)
# get a unit that names the program and configuration where they are put.
#
# The rules are those of GNUInstallDirs and Debian:
#   prefix /usr:   program /usr/bin, configuration /etc/convoke,
#                  unit /lib/systemd/system (where bookworm's packages put
#                  units; lintian flags /usr/lib/systemd/system)
#   other prefix:  program PREFIX/bin, configuration PREFIX/etc/convoke,
#                  unit PREFIX/lib/systemd/system (systemd searches
#                  /usr/local/lib/systemd/system; for other prefixes link
#                  the unit with `systemctl link`)
# An absolute CMAKE_INSTALL_SYSCONFDIR given at configure time wins.

# convoke_unit_dirs(PREFIX OUT [BINDIR rel] [SYSCONFDIR dir] [DOCDIR rel])
# sets OUT_BINDIR, OUT_SYSCONFDIR, OUT_DOCDIR, OUT_UNITDIR (absolute paths).
function(convoke_unit_dirs prefix out)
  cmake_parse_arguments(arg "" "BINDIR;SYSCONFDIR;DOCDIR" "" ${ARGN})
  foreach(d BINDIR SYSCONFDIR DOCDIR)
    if(NOT DEFINED arg_${d})
      set(arg_${d} "${CMAKE_INSTALL_${d}}")
    endif()
  endforeach()
  string(REGEX REPLACE "/+$" "" prefix "${prefix}")
  if(prefix STREQUAL "/usr")
    set(sysconf_default "/etc")
    set(unitdir "/lib/systemd/system")
  else()
    set(sysconf_default "${prefix}/etc")
    set(unitdir "${prefix}/lib/systemd/system")
  endif()
  if(IS_ABSOLUTE "${arg_SYSCONFDIR}")
    set(sysconfdir "${arg_SYSCONFDIR}")
  elseif(arg_SYSCONFDIR STREQUAL "etc")
    set(sysconfdir "${sysconf_default}")
  else()
    set(sysconfdir "${prefix}/${arg_SYSCONFDIR}")
  endif()
  foreach(d BINDIR DOCDIR)
    if(IS_ABSOLUTE "${arg_${d}}")
      set(${d} "${arg_${d}}")
    else()
      set(${d} "${prefix}/${arg_${d}}")
    endif()
  endforeach()
  set(${out}_BINDIR "${BINDIR}" PARENT_SCOPE)
  set(${out}_DOCDIR "${DOCDIR}" PARENT_SCOPE)
  set(${out}_SYSCONFDIR "${sysconfdir}" PARENT_SCOPE)
  set(${out}_UNITDIR "${unitdir}" PARENT_SCOPE)
endfunction()

# Install step (called from install(CODE), cmake_install.cmake's scope:
# CMAKE_INSTALL_PREFIX is the prefix given now; file(INSTALL) adds DESTDIR).
# An existing configuration file that differs from the sample is kept; the
# sample goes next to it as convoke-server.toml.sample.
function(convoke_install_server_files source_dir work_dir bindir sysconfdir docdir)
  convoke_unit_dirs("${CMAKE_INSTALL_PREFIX}" CONVOKE_UNIT
    BINDIR "${bindir}" SYSCONFDIR "${sysconfdir}" DOCDIR "${docdir}")
  set(unit "${work_dir}/install/convoke-server.service")
  configure_file("${source_dir}/deploy/systemd/convoke-server.service.in" "${unit}" @ONLY)
  file(INSTALL "${unit}" DESTINATION "${CONVOKE_UNIT_UNITDIR}"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  set(sample "${source_dir}/deploy/config/convoke-server.toml")
  set(conf "$ENV{DESTDIR}${CONVOKE_UNIT_SYSCONFDIR}/convoke/convoke-server.toml")
  if(EXISTS "${conf}")
    file(SHA256 "${conf}" have)
    file(SHA256 "${sample}" want)
    if(NOT have STREQUAL want)
      message(STATUS "Keeping ${conf} (changed); the sample: ${conf}.sample")
      file(INSTALL "${sample}" DESTINATION "${CONVOKE_UNIT_SYSCONFDIR}/convoke"
           RENAME convoke-server.toml.sample)
      set(sample "")
    endif()
  endif()
  if(sample)
    file(INSTALL "${sample}" DESTINATION "${CONVOKE_UNIT_SYSCONFDIR}/convoke")
  endif()
  file(INSTALL "${source_dir}/deploy/packaging/logrotate"
       DESTINATION "${CONVOKE_UNIT_SYSCONFDIR}/logrotate.d" RENAME convoke-server)
endfunction()
