# Workaround for the ROS 2 pip wheels (ros-*-msgs etc.).
#
# Their exported CMake targets (e.g. std_msgs::std_msgs__rosidl_generator_py)
# list include directories from the machine the wheels were built on, such as
#   /opt/python/cp311-cp311/include/python3.11
# CMake refuses to generate when an imported target names a directory that
# does not exist ("includes non-existent path ... in its
# INTERFACE_INCLUDE_DIRECTORIES").
#
# Use:  cmake -DCMAKE_PROJECT_INCLUDE=<this file> ...
# CMake includes this file right after the top-level project() call. We then
# defer a clean-up to the end of the top-level CMakeLists.txt (i.e. after all
# find_package() calls have created their imported targets, but before the
# generate step) that removes non-existent absolute directories from every
# imported target's INTERFACE_INCLUDE_DIRECTORIES. The real Python/NumPy
# include directories are added by the project's own find_package(Python3)
# so nothing needed is lost. No files outside the build tree are modified.

# Needs the DIRECTORY property IMPORTED_TARGETS (3.21). Not using
# cmake_minimum_required() here: it would reset the including project's policies.
if(CMAKE_VERSION VERSION_LESS 3.21)
  message(FATAL_ERROR "drop_missing_imported_includes.cmake needs CMake >= 3.21")
endif()

function(_dmii_collect_dirs dir out_var)
  # The directory itself plus all its add_subdirectory() children.
  set(result "${dir}")
  get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
  foreach(sub IN LISTS subdirs)
    _dmii_collect_dirs("${sub}" sub_result)
    list(APPEND result ${sub_result})
  endforeach()
  set(${out_var} "${result}" PARENT_SCOPE)
endfunction()

function(_dmii_drop_missing_imported_includes)
  _dmii_collect_dirs("${CMAKE_SOURCE_DIR}" dirs)
  set(n_dropped 0)
  foreach(dir IN LISTS dirs)
    get_property(targets DIRECTORY "${dir}" PROPERTY IMPORTED_TARGETS)
    foreach(tgt IN LISTS targets)
      if(NOT TARGET "${tgt}")
        continue()  # non-global target of a subdirectory: not visible here
      endif()
      get_target_property(incs "${tgt}" INTERFACE_INCLUDE_DIRECTORIES)
      if(NOT incs)
        continue()
      endif()
      set(kept "")
      foreach(inc IN LISTS incs)
        # Keep generator expressions and relative entries untouched; only
        # plain absolute paths can be checked for existence here.
        if(inc MATCHES "^\\$<" OR NOT IS_ABSOLUTE "${inc}" OR EXISTS "${inc}")
          list(APPEND kept "${inc}")
        else()
          math(EXPR n_dropped "${n_dropped} + 1")
        endif()
      endforeach()
      if(NOT kept STREQUAL incs)
        set_target_properties("${tgt}" PROPERTIES
          INTERFACE_INCLUDE_DIRECTORIES "${kept}")
      endif()
    endforeach()
  endforeach()
  message(STATUS
    "drop_missing_imported_includes: removed ${n_dropped} non-existent "
    "include dir(s) from imported targets")
endfunction()

# Only arm once, for the top-level project() (CMAKE_PROJECT_INCLUDE is also
# applied to project() calls in subdirectories).
get_property(_dmii_armed GLOBAL PROPERTY _DMII_ARMED)
if(NOT _dmii_armed)
  set_property(GLOBAL PROPERTY _DMII_ARMED TRUE)
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}"
    CALL _dmii_drop_missing_imported_includes)
endif()
