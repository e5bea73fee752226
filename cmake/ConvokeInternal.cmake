# Flags shared by every Convoke target (linked PRIVATE, never exported).
add_library(convoke_internal INTERFACE)
target_compile_features(convoke_internal INTERFACE cxx_std_20)
target_compile_options(convoke_internal INTERFACE -Wall -Wextra -Wpedantic)
if(CONVOKE_SANITIZERS)
  target_compile_options(convoke_internal INTERFACE
    -fsanitize=${CONVOKE_SANITIZERS} -fno-omit-frame-pointer)
  target_link_options(convoke_internal INTERFACE -fsanitize=${CONVOKE_SANITIZERS})
endif()

# Version string available to every component.
target_compile_definitions(convoke_internal INTERFACE
  CONVOKE_VERSION="${PROJECT_VERSION}")
