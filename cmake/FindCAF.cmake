# FindCAF.cmake - locate the C++ Actor Framework 0.17.x as packaged by Debian.
#
# Debian's libcaf-dev ships headers and shared libraries but no CMake package
# and no pkg-config file, so this module finds them by hand.
#
# Components: core (always), io, openssl.
# Result variables: CAF_FOUND, CAF_VERSION, CAF_INCLUDE_DIR
# Imported targets: CAF::core, CAF::io, CAF::openssl (for found components)

find_package(Threads REQUIRED)

find_path(CAF_INCLUDE_DIR NAMES caf/all.hpp caf/config.hpp)
find_library(CAF_CORE_LIBRARY NAMES caf_core)

if(CAF_INCLUDE_DIR AND EXISTS "${CAF_INCLUDE_DIR}/caf/config.hpp")
  file(STRINGS "${CAF_INCLUDE_DIR}/caf/config.hpp" _caf_version_line
       REGEX "^#define CAF_VERSION [0-9]+")
  string(REGEX REPLACE ".*CAF_VERSION ([0-9]+).*" "\\1" _caf_v "${_caf_version_line}")
  # CAF encodes major*10000 + minor*100 + patch (0.17.6 -> 1706).
  math(EXPR _caf_major "${_caf_v} / 10000")
  math(EXPR _caf_minor "(${_caf_v} / 100) % 100")
  math(EXPR _caf_patch "${_caf_v} % 100")
  set(CAF_VERSION "${_caf_major}.${_caf_minor}.${_caf_patch}")
endif()

set(_caf_required_vars CAF_INCLUDE_DIR CAF_CORE_LIBRARY)
foreach(_comp IN LISTS CAF_FIND_COMPONENTS)
  if(_comp STREQUAL "core")
    continue()
  endif()
  string(TOUPPER "${_comp}" _up)
  find_library(CAF_${_up}_LIBRARY NAMES caf_${_comp})
  if(CAF_${_up}_LIBRARY)
    set(CAF_${_comp}_FOUND TRUE)
  endif()
  if(CAF_FIND_REQUIRED_${_comp})
    list(APPEND _caf_required_vars CAF_${_up}_LIBRARY)
  endif()
endforeach()
set(CAF_core_FOUND TRUE)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(CAF
  REQUIRED_VARS ${_caf_required_vars}
  VERSION_VAR CAF_VERSION
  HANDLE_COMPONENTS
  FAIL_MESSAGE "CAF 0.17 not found: apt-get install libcaf-dev")

if(CAF_FOUND AND CAF_VERSION VERSION_GREATER_EQUAL 0.18)
  message(FATAL_ERROR "Convoke targets CAF 0.17.x; found ${CAF_VERSION}")
endif()

if(CAF_FOUND AND NOT TARGET CAF::core)
  add_library(CAF::core SHARED IMPORTED)
  set_target_properties(CAF::core PROPERTIES
    IMPORTED_LOCATION "${CAF_CORE_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES Threads::Threads)
  foreach(_comp io openssl)
    string(TOUPPER "${_comp}" _up)
    if(CAF_${_up}_LIBRARY)
      add_library(CAF::${_comp} SHARED IMPORTED)
      set_target_properties(CAF::${_comp} PROPERTIES
        IMPORTED_LOCATION "${CAF_${_up}_LIBRARY}"
        INTERFACE_LINK_LIBRARIES CAF::core)
    endif()
  endforeach()
endif()

mark_as_advanced(CAF_INCLUDE_DIR CAF_CORE_LIBRARY CAF_IO_LIBRARY CAF_OPENSSL_LIBRARY)
